"""`report_to="tensorboard"`: transformers' TensorBoardCallback, writing event files without torch.

transformers writes through torch's (or tensorboardX's) SummaryWriter. Here the same events are written
directly in TensorBoard's file format, so neither torch nor tensorboard is needed to train:
- a file `events.out.tfevents.<time>.<host>.<pid>.<n>` in `$TENSORBOARD_LOGGING_DIR`, else
  `<output_dir>/runs/<Mon01_12-00-00>_<host>` (transformers' default_logdir);
- records: 8-byte length, masked CRC-32C of the length, an `Event` protocol buffer, masked CRC-32C of it;
- at train begin the texts "args" (TrainingArguments as JSON) and "model_config"; at every log the numbers
  as scalars `train/<key>`, `eval/<key>`, `test/<key>` (transformers' rewrite_logs) at the global step,
  strings as texts; text tags end in "/text_summary", as torch's add_text writes them.
The protocol buffers (Event, Summary, TensorProto) are encoded by hand: a handful of fields.
"""
import os
import socket
import struct
import time
from datetime import datetime

from ..utils import logger
from .callbacks import TrainerCallback

# ---------------------------------------------------------------------- CRC-32C (Castagnoli), as TFRecord
_CRC_TABLE = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ 0x82F63B78 if _crc & 1 else _crc >> 1
    _CRC_TABLE.append(_crc)


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------- protocol buffer encoding
def _varint(value):
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number, wire_type, payload):
    return _varint(number << 3 | wire_type) + payload


def _bytes_field(number, data):
    data = data.encode("utf-8") if isinstance(data, str) else data
    return _field(number, 2, _varint(len(data)) + data)


def _event(step, summary_values=None, file_version=None, wall_time=None):
    """An `Event`: wall_time (1, double), step (2, int64), file_version (3) or summary (5)."""
    out = _field(1, 1, struct.pack("<d", time.time() if wall_time is None else wall_time))
    out += _field(2, 0, _varint(int(step)))
    if file_version is not None:
        out += _bytes_field(3, file_version)
    if summary_values is not None:
        out += _bytes_field(5, b"".join(_bytes_field(1, value) for value in summary_values))  # Summary.value
    return out


def _scalar_value(tag, value):
    """Summary.Value with tag (1) and simple_value (2, float), as SummaryWriter.add_scalar writes it."""
    return _bytes_field(1, tag) + _field(2, 5, struct.pack("<f", float(value)))


def _text_value(tag, text):
    """Summary.Value of the text plugin: metadata (9) naming plugin "text", tensor (8) a DT_STRING (7) of
    shape [1] holding the UTF-8 text, as torch's add_text writes it."""
    metadata = _bytes_field(1, _bytes_field(1, "text") + _bytes_field(2, b""))  # plugin_data{plugin_name, content}
    shape = _bytes_field(2, _field(1, 0, _varint(1)))  # TensorShapeProto.dim{size: 1}
    tensor = _field(1, 0, _varint(7)) + _bytes_field(2, shape) + _bytes_field(8, text)
    return _bytes_field(1, f"{tag}/text_summary") + _bytes_field(8, tensor) + _bytes_field(9, metadata)


class EventFileWriter:
    """Appends events to one TensorBoard event file (created with its file_version header)."""

    _count = 0

    def __init__(self, log_dir):
        os.makedirs(log_dir, exist_ok=True)
        EventFileWriter._count += 1
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
                f"{EventFileWriter._count}")
        self.path = os.path.join(log_dir, name)
        self._file = open(self.path, "ab")
        self._write(_event(0, file_version="brain.Event:2"))
        self.flush()

    def _write(self, event):
        header = struct.pack("<Q", len(event))
        self._file.write(header + struct.pack("<I", masked_crc32c(header)) + event
                         + struct.pack("<I", masked_crc32c(event)))

    def add_scalar(self, tag, value, step):
        self._write(_event(step, [_scalar_value(tag, value)]))

    def add_text(self, tag, text, step=0):
        self._write(_event(step, [_text_value(tag, text)]))

    def flush(self):
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()


def rewrite_logs(logs):
    """transformers' rewrite_logs: eval_x -> eval/x, test_x -> test/x, anything else -> train/x."""
    out = {}
    for key, value in logs.items():
        if key.startswith("eval_"):
            out["eval/" + key[len("eval_"):]] = value
        elif key.startswith("test_"):
            out["test/" + key[len("test_"):]] = value
        else:
            out["train/" + key] = value
    return out


def default_logdir():
    return os.path.join("runs", datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname())


class TensorBoardCallback(TrainerCallback):
    """transformers.integrations.TensorBoardCallback on EventFileWriter (rank 0 writes)."""

    def __init__(self, tb_writer=None):
        self.tb_writer = tb_writer
        self.logging_dir = os.getenv("TENSORBOARD_LOGGING_DIR", None)
        if self.logging_dir is not None:
            self.logging_dir = os.path.expanduser(self.logging_dir)

    def _init_summary_writer(self, args):
        if self.logging_dir is None:
            self.logging_dir = os.path.join(args.output_dir, default_logdir())
        self.tb_writer = EventFileWriter(self.logging_dir)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.tb_writer is None:
            self._init_summary_writer(args)
        self.tb_writer.add_text("args", args.to_json_string())
        model = kwargs.get("model")
        config = getattr(model, "config", None)
        if config is not None:
            self.tb_writer.add_text("model_config", config.to_json_string())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.tb_writer is None:
            self._init_summary_writer(args)
        for key, value in rewrite_logs(logs or {}).items():
            if isinstance(value, (int, float)):
                self.tb_writer.add_scalar(key, value, state.global_step)
            elif isinstance(value, str):
                self.tb_writer.add_text(key, value, state.global_step)
            else:
                logger.warning(f'Trainer is attempting to log a value of "{value}" of type {type(value)} for key '
                               f'"{key}" as a scalar; TensorBoard takes numbers and strings, so it was dropped.')
        self.tb_writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.tb_writer:
            self.tb_writer.close()
            self.tb_writer = None
