"""The view parameters the self-supervised pretexts share (SimCLR, MoCo): pydantic only.

They are read when a pretext registers and a config is checked; the views themselves
(`_views.py`, torch) are imported when a pretext is built.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ViewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    crop_scale_min: float = Field(0.4, gt=0, le=1, description="Smallest random-resized-crop area (fraction).")
    rotation: float = Field(10.0, ge=0, le=180, description="Largest random rotation, in degrees.")
    flip: bool = Field(False, description="Random horizontal flips (off: digits and text are not mirror-symmetric).")
    jitter: float = Field(0.4, ge=0, le=1, description="Random contrast and brightness strength.")
    noise: float = Field(0.1, ge=0, description="Std of added Gaussian noise, in normalised units.")
    erase: float = Field(0.25, ge=0, le=1, description="Probability of erasing a random rectangle.")
