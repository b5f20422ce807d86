"""`python -m workers.mock_provider --port 8001 --latency uniform:0.1,0.5 --rate-429 0.05`.

The flags are generated from MockConfig's fields, so a new field is a new flag without a
second list to keep in step; values are validated by MockConfig itself.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Sequence

from pydantic import ValidationError

from models.mock_config import MockConfig
from workers.mock_provider.server import serve

_NONE_WORDS = frozenset({"none", "null"})


def _flag(name: object) -> str:
    return "--" + str(name).replace("_", "-")


def _nullable(name: str) -> bool:
    annotation = MockConfig.model_fields[name].annotation
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return is_union and type(None) in typing.get_args(annotation)


def build_parser() -> argparse.ArgumentParser:
    """One flag per MockConfig field, plus where to listen."""
    parser = argparse.ArgumentParser(
        prog="python -m workers.mock_provider",
        description="Run the mock OpenAI-compatible provider.",
        epilog="example: python -m workers.mock_provider --port 8001 --latency exp:0.2 "
        "--rate-429 0.1 --retry-after 2",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (8001)")
    for name, info in MockConfig.model_fields.items():
        nullable = " ('none' to unset)" if _nullable(name) else ""
        parser.add_argument(
            _flag(name),
            dest=name,
            metavar=name.upper(),
            help=f"{info.description} Default: {info.default}.{nullable}",
        )
    return parser


def config_from_args(args: argparse.Namespace) -> MockConfig:
    """Build the config from the flags given; unset flags keep MockConfig's defaults."""
    values: dict[str, str | None] = {}
    for name in MockConfig.model_fields:
        value: str | None = getattr(args, name)
        if value is None:
            continue
        values[name] = None if _nullable(name) and value.lower() in _NONE_WORDS else value
    return MockConfig.model_validate(values)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        parser.error("; ".join(f"{_flag(e['loc'][0])}: {e['msg']}" for e in exc.errors()))
    serve(config, args.host, args.port)


if __name__ == "__main__":
    main()
