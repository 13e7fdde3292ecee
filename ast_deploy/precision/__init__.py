"""FP16 and INT8 ONNX for TensorRT's strongly typed mode: calibration, conversion, checks."""

from .calibration import CalibrationError, CalibrationSet, default_calibration_folder, load_calibration

__all__ = ["CalibrationError", "CalibrationSet", "convert_fp16", "default_calibration_folder",
           "fp16_overflow_report", "load_calibration", "quantize_int8"]


def __getattr__(name):  # onnxruntime-heavy modules load on first use
    if name == "convert_fp16":
        from .fp16 import convert_fp16
        return convert_fp16
    if name == "fp16_overflow_report":
        from .overflow import fp16_overflow_report
        return fp16_overflow_report
    if name == "quantize_int8":
        from .int8 import quantize_int8
        return quantize_int8
    raise AttributeError(name)
