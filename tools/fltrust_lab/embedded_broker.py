"""Run amqtt as a loopback MQTT 3.1.1 broker for machines without Mosquitto.

Usage: ``python -m fltrust_lab.embedded_broker --port PORT``. The broker accepts
anonymous clients, keeps retained messages in memory and stops on SIGTERM or
SIGINT. amqtt 0.12.1 installs into the Home Assistant environment without
changing any package that Home Assistant pins (checked with ``pip install
--dry-run amqtt`` against homeassistant 2026.10.4), but script/setup does not
install it: ``.venv/bin/pip install amqtt`` does.

NOTE: amqtt 0.12.1 sends a new subscriber the retained messages that match
another client's subscription even when they do not match its own filter. The
fltrust clients drop such messages (wrong topic or signature), but they show up
in their logs as rejections.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import LOOPBACK

_LOGGER = logging.getLogger("fltrust_lab.embedded_broker")


def broker_config(host: str, port: int) -> dict[str, object]:
    """Return the amqtt configuration of one anonymous TCP listener."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


async def serve(host: str, port: int) -> None:
    """Run the broker until SIGTERM or SIGINT."""
    from amqtt.broker import Broker

    broker = Broker(broker_config(host, port))
    await broker.start()
    _LOGGER.info("amqtt broker listening on %s:%s", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _LOGGER.info("stopping amqtt broker on %s:%s", host, port)
    await broker.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the broker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host", default=LOOPBACK, help="address to listen on (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import amqtt  # noqa: F401
    except ImportError:
        _LOGGER.error("amqtt is not installed. Install it with .venv/bin/pip install amqtt")
        return 2
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
