"""The example configurations in edge_node/examples must stay valid."""

from pathlib import Path

import pytest
from fltrust_edge.config import CsvSourceConfig, MqttSourceConfig, load_config
from fltrust_edge.sources import CsvReplay

EXAMPLES = Path(__file__).resolve().parents[2] / "edge_node" / "examples"


@pytest.mark.parametrize("name", ["zigbee2mqtt.toml", "nab_machine_temperature.toml"])
def test_example_is_valid(name):
    config = load_config(EXAMPLES / name)

    assert config.devices
    assert config.simulation is None


def test_zigbee2mqtt_example_sources():
    config = load_config(EXAMPLES / "zigbee2mqtt.toml")

    sources = [device.source for device in config.devices]
    assert all(isinstance(source, MqttSourceConfig) for source in sources)
    assert sources[0].topics[0].value_path == "temperature"
    assert sources[1].topics[0].value_path is None


def test_nab_example_labels():
    config = load_config(EXAMPLES / "nab_machine_temperature.toml")
    device = config.devices[0]
    assert isinstance(device.source, CsvSourceConfig)

    samples = list(CsvReplay(device).samples())
    labels = [sample.label for sample in samples]

    assert len(samples) == 22695
    assert sum(labels) == 2268
    assert sum(labels[: config.detection.train_rows]) == 0
