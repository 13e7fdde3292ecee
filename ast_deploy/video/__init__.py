"""Restoring video: a clip's frames through the Runner, the clip's timing, colour and other
streams kept (PyAV, the ``[video]`` extra; imported only when a clip is restored)."""

from .encode import EncoderError, EncoderSettings, choose_encoder
from .pipeline import ClipResult, VideoOptions, restore_clip
from .probe import VIDEO_SUFFIXES, ClipInfo, VideoError, is_video, probe

__all__ = ["VIDEO_SUFFIXES", "ClipInfo", "ClipResult", "EncoderError", "EncoderSettings", "VideoError",
           "VideoOptions", "choose_encoder", "is_video", "probe", "restore_clip"]
