"""Video files in and out (PyAV), and frames to model input and back."""
from .io import VideoClip, VideoError, probe_video, read_video, write_video
from .preprocess import PreparedClip, finish_frames, prepare_frames, resolution_buckets

__all__ = ["VideoClip", "VideoError", "probe_video", "read_video", "write_video",
           "PreparedClip", "finish_frames", "prepare_frames", "resolution_buckets"]
