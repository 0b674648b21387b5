"""proto/reelforge/v1 mirrors the pydantic contracts field for field; these tests keep it so.

Everything is derived from the pydantic models and from the compiled .proto descriptors, so a field or an
enum member added, renamed or retyped on one side only fails here.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from enum import StrEnum
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from grpc_tools import protoc
from pydantic import BaseModel

from reelforge.core.contracts import Phase, Priority, Status, VideoError, VideoObject, WebhookEvent

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
PACKAGE = "reelforge.v1"
# Models and their messages; only VideoObject is renamed (the OpenAI API calls it the video object).
MESSAGE_FOR_MODEL: dict[type[BaseModel], str] = {
    VideoObject: "Video",
    VideoError: "VideoError",
    WebhookEvent: "WebhookEvent",
}
PROTO_TYPES_FOR_SCALAR: dict[type, set[int]] = {
    str: {FieldDescriptor.TYPE_STRING},
    int: {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64},
    float: {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT},
    bool: {FieldDescriptor.TYPE_BOOL},
}


def _leaf_types(annotation: Any) -> Iterator[Any]:
    yield annotation
    if typing.get_origin(annotation) is not typing.Literal:
        for arg in typing.get_args(annotation):
            yield from _leaf_types(arg)


ENUMS: list[type[StrEnum]] = sorted(
    {
        leaf
        for model in MESSAGE_FOR_MODEL
        for info in model.model_fields.values()
        for leaf in _leaf_types(info.annotation)
        if isinstance(leaf, type) and issubclass(leaf, StrEnum)
    },
    key=lambda enum: enum.__name__,
)


def _upper_snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()


def proto_enum_value_name(enum_name: str, value: str) -> str:
    """The mapping rule stated in video.proto: ("Status", "in_progress") -> STATUS_IN_PROGRESS."""
    return f"{_upper_snake(enum_name)}_{value.upper()}"


def _unspecified(enum: type[StrEnum]) -> str:
    return proto_enum_value_name(enum.__name__, "unspecified")


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path_factory.mktemp("proto") / "contracts.binpb"
    sources = sorted(str(path.relative_to(PROTO_ROOT)) for path in PROTO_ROOT.rglob("*.proto"))
    exit_code = protoc.main(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{files('grpc_tools') / '_proto'}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *sources,
        ]
    )
    assert exit_code == 0, "protoc rejected proto/: its messages are in the captured stderr"
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@pytest.fixture(scope="module")
def pool(descriptor_set: descriptor_pb2.FileDescriptorSet) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_set.file:  # --include_imports writes dependencies first
        pool.Add(file)
    return pool


@pytest.fixture(scope="module")
def field_comments(descriptor_set: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Leading comment of every field of a top-level message, by the field's full name."""
    message_type, field = (
        descriptor_pb2.FileDescriptorProto.MESSAGE_TYPE_FIELD_NUMBER,
        descriptor_pb2.DescriptorProto.FIELD_FIELD_NUMBER,
    )
    comments: dict[str, str] = {}
    for file in descriptor_set.file:
        for location in file.source_code_info.location:
            path = list(location.path)
            if len(path) == 4 and path[0] == message_type and path[2] == field:
                message = file.message_type[path[1]]
                comments[f"{file.package}.{message.name}.{message.field[path[3]].name}"] = (
                    location.leading_comments
                )
    return comments


def _message(pool: descriptor_pool.DescriptorPool, model: type[BaseModel]) -> Descriptor:
    return pool.FindMessageTypeByName(f"{PACKAGE}.{MESSAGE_FOR_MODEL[model]}")


def _without_none(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [arg for arg in args if arg is not type(None)]  # a proto field has one type
        return inner, True
    return annotation, False


def _type_problem(annotation: Any, field: FieldDescriptor, comment: str) -> str | None:
    where, proto_type = field.full_name, descriptor_pb2.FieldDescriptorProto.Type.Name(field.type)
    if typing.get_origin(annotation) is typing.Literal:
        undocumented = [value for value in typing.get_args(annotation) if f'"{value}"' not in comment]
        if field.type != FieldDescriptor.TYPE_STRING or undocumented:
            return f"{where}: a Literal is a string whose comment lists every value; missing {undocumented}"
        return None
    if typing.get_origin(annotation) is dict:
        if field.message_type is None or not field.message_type.GetOptions().map_entry:
            return f"{where}: {annotation} needs a proto map, found {proto_type}"
        key, value = typing.get_args(annotation)
        entry = field.message_type.fields_by_name
        return _type_problem(key, entry["key"], "") or _type_problem(value, entry["value"], "")
    if field.is_repeated:
        return f"{where}: repeated in proto but {annotation} in Python"
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        if field.enum_type is None or field.enum_type.full_name != f"{PACKAGE}.{annotation.__name__}":
            return f"{where}: needs enum {PACKAGE}.{annotation.__name__}, found {proto_type}"
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in MESSAGE_FOR_MODEL:
            return f"{where}: model {annotation.__name__} has no message; add it to MESSAGE_FOR_MODEL"
        expected = f"{PACKAGE}.{MESSAGE_FOR_MODEL[annotation]}"
        if field.message_type is None or field.message_type.full_name != expected:
            return f"{where}: needs message {expected}, found {proto_type}"
        return None
    if annotation not in PROTO_TYPES_FOR_SCALAR:
        return f"{where}: no proto mapping known for {annotation!r}; teach this test one"
    if field.type not in PROTO_TYPES_FOR_SCALAR[annotation]:
        return f"{where}: {annotation.__name__} in Python, {proto_type} in proto"
    return None


def _field_problem(annotation: Any, field: FieldDescriptor, comment: str) -> str | None:
    inner, nullable = _without_none(annotation)
    scalar_with_presence = field.has_presence and field.type != FieldDescriptor.TYPE_MESSAGE
    if nullable and not field.has_presence:
        return f"{field.full_name}: None allowed in Python, so proto needs `optional` or a message type"
    if not nullable and scalar_with_presence:
        return f"{field.full_name}: `optional` in proto but never None in Python"
    return _type_problem(inner, field, comment)


@pytest.mark.parametrize("model", MESSAGE_FOR_MODEL, ids=lambda model: model.__name__)
def test_message_has_exactly_the_models_fields(
    model: type[BaseModel], pool: descriptor_pool.DescriptorPool
) -> None:
    assert set(_message(pool, model).fields_by_name) == set(model.model_fields)


@pytest.mark.parametrize("model", MESSAGE_FOR_MODEL, ids=lambda model: model.__name__)
def test_message_field_types_match_the_model(
    model: type[BaseModel], pool: descriptor_pool.DescriptorPool, field_comments: dict[str, str]
) -> None:
    proto_fields = _message(pool, model).fields_by_name
    problems = [
        _field_problem(
            info.annotation, proto_fields[name], field_comments.get(proto_fields[name].full_name, "")
        )
        for name, info in model.model_fields.items()
        if name in proto_fields
    ]
    assert [problem for problem in problems if problem] == []


def test_proto_declares_exactly_the_enums_the_models_use(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    declared = {
        enum.name for file in descriptor_set.file if file.package == PACKAGE for enum in file.enum_type
    }
    assert declared == {enum.__name__ for enum in ENUMS}


@pytest.mark.parametrize("enum", ENUMS, ids=lambda enum: enum.__name__)
def test_enum_values_follow_the_mapping_rule(
    enum: type[StrEnum], pool: descriptor_pool.DescriptorPool
) -> None:
    proto_enum: EnumDescriptor = pool.FindEnumTypeByName(f"{PACKAGE}.{enum.__name__}")
    numbers = [value.number for value in proto_enum.values]
    assert len(numbers) == len(set(numbers)), "aliased enum values break the one-to-one mapping"
    assert proto_enum.values_by_number[0].name == _unspecified(enum)
    assert set(proto_enum.values_by_name) - {_unspecified(enum)} == {
        proto_enum_value_name(enum.__name__, m.value) for m in enum
    }


def _rename_enums(
    data: dict[str, Any], message: Descriptor, rename: typing.Callable[[EnumDescriptor, str], str]
) -> dict[str, Any]:
    renamed = dict(data)
    for name, value in data.items():
        field = message.fields_by_name[name]
        if field.enum_type is not None:
            renamed[name] = rename(field.enum_type, value)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry and value:
            renamed[name] = _rename_enums(value, field.message_type, rename)
    return renamed


def test_webhook_event_round_trips_through_proto_by_the_mapping_rule(
    pool: descriptor_pool.DescriptorPool,
) -> None:
    """What a non-Python consumer does with a webhook body: JSON in, proto message, and back unchanged."""
    video = VideoObject(
        id="video_0123",
        model="reelforge-dit-s",
        status=Status.failed,
        progress=40,
        created_at=1_767_225_600,
        completed_at=1_767_225_660,
        error=VideoError(code="engine_error", message="CUDA out of memory"),
        prompt="a red kite over the sea",
        seconds="4",
        size="1280x720",
        phase=Phase.denoising,
        step=3,
        steps=8,
        timings={"encoding_prompt": 0.25, "denoising": 12.5},
        seed=2**40,  # past int32: the proto field must be int64
        fps=24,
        guidance_scale=5.0,
        priority=Priority.interactive,
        metadata={"user": "u-1"},
    )
    event = WebhookEvent(type="video.failed", timestamp="2026-01-01T00:01:00Z", data=video)
    descriptor = _message(pool, WebhookEvent)

    def to_proto(enum: EnumDescriptor, value: str) -> str:
        return proto_enum_value_name(enum.name, value)

    def from_proto(enum: EnumDescriptor, name: str) -> str:
        return name.removeprefix(proto_enum_value_name(enum.name, "")).lower()

    message = json_format.ParseDict(
        _rename_enums(event.model_dump(mode="json"), descriptor, to_proto),
        message_factory.GetMessageClass(descriptor)(),
    )
    wire = type(message).FromString(message.SerializeToString())
    back = json_format.MessageToDict(
        wire, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert WebhookEvent.model_validate(_rename_enums(back, descriptor, from_proto)) == event
