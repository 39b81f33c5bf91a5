"""In-process / standalone emulator of Segment's Tracking API and Profile API (for tests,
benchmarks and the sandbox). See :class:`SegmentEmulator`."""

from .app import SegmentEmulator
from .faults import Fault, Faults
from .profiles import Profile, ProfileState
from .tracking import TrackingState

__all__ = ["Fault", "Faults", "Profile", "ProfileState", "SegmentEmulator", "TrackingState"]
