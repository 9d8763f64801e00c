"""The example configurations in edge_node/examples must stay valid."""

import tomllib
from pathlib import Path

import pytest
from fltrust_edge.config import CsvSourceConfig, MqttSourceConfig, NodeConfig, parse_config
from fltrust_edge.sources import CsvReplay

EXAMPLES = Path(__file__).resolve().parents[2] / "edge_node" / "examples"


def load_example(name: str, state_dir: Path) -> NodeConfig:
    """Load an example with its state_dir moved to ``state_dir``, which loading creates."""
    data = tomllib.loads((EXAMPLES / name).read_text())
    assert isinstance(data["security"]["state_dir"], str)
    data["security"]["state_dir"] = str(state_dir)
    return parse_config(data, base_dir=EXAMPLES, path=EXAMPLES / name)


@pytest.mark.parametrize("name", ["zigbee2mqtt.toml", "nab_machine_temperature.toml"])
def test_example_is_valid(name, tmp_path):
    config = load_example(name, tmp_path / "state")

    assert config.devices
    assert config.simulation is None


def test_zigbee2mqtt_example_sources(tmp_path):
    config = load_example("zigbee2mqtt.toml", tmp_path / "state")

    sources = [device.source for device in config.devices]
    assert all(isinstance(source, MqttSourceConfig) for source in sources)
    assert sources[0].topics[0].value_path == "temperature"
    assert sources[1].topics[0].value_path is None


def test_nab_example_labels(tmp_path):
    config = load_example("nab_machine_temperature.toml", tmp_path / "state")
    device = config.devices[0]
    assert isinstance(device.source, CsvSourceConfig)

    samples = list(CsvReplay(device).samples())
    labels = [sample.label for sample in samples]

    assert len(samples) == 22695
    assert sum(labels) == 2268
    assert sum(labels[: config.detection.train_rows]) == 0
