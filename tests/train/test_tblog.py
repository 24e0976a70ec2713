"""The built-in TensorBoard writer produces valid TFRecord-framed Event protobufs."""

from __future__ import annotations

import json
import struct

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from jaxevo.train.tblog import EventFileWriter, MetricsLogger, crc32c, masked_crc32c


def _event_classes():
    """Event / Summary / Summary.Value message classes with TensorFlow's field numbers."""
    fdp = descriptor_pb2.FileDescriptorProto(name="ev_test.proto", package="evtest")
    F = descriptor_pb2.FieldDescriptorProto
    value = fdp.message_type.add(name="Value")
    value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    value.field.add(name="simple_value", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    summary = fdp.message_type.add(name="Summary")
    summary.field.add(name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                      type_name=".evtest.Value")
    event = fdp.message_type.add(name="Event")
    event.field.add(name="wall_time", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    event.field.add(name="step", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    event.field.add(name="file_version", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    event.field.add(name="summary", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                    type_name=".evtest.Summary")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("evtest.Event"))


def _records(path):
    data = path.read_bytes()
    i, out = 0, []
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        assert struct.unpack("<I", data[i + 8:i + 12])[0] == masked_crc32c(data[i:i + 8])
        payload = data[i + 12:i + 12 + n]
        assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == masked_crc32c(payload)
        out.append(payload)
        i += 16 + n
    return out


def test_crc32c_known_value():
    assert crc32c(b"123456789") == 0xE3069283


def test_event_file_decodes(tmp_path):
    w = EventFileWriter(tmp_path)
    w.add_scalars({"loss": 0.5, "rewards/accuracies": 1.0}, step=3)
    w.add_scalars({"loss": 0.25}, step=300)
    w.close()
    Event = _event_classes()
    events = [Event.FromString(r) for r in _records(w.path)]
    assert events[0].file_version == "brain.Event:2"
    assert events[1].step == 3 and {v.tag: v.simple_value for v in events[1].summary.value} == {
        "loss": 0.5, "rewards/accuracies": 1.0}
    assert events[2].step == 300 and events[2].summary.value[0].simple_value == 0.25


def test_metrics_logger(tmp_path):
    lg = MetricsLogger(tmp_path)
    lg.log(1, {"loss": 1.5, "grad_norm": float("nan")})
    lg.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row == {"step": 1, "loss": 1.5, "grad_norm": "nan"}
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
