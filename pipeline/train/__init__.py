"""Networks trained and applied: one loop, losses, the device, and each training's step."""
