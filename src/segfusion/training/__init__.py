"""Two-stage training: loop, schedule, checkpoint/resume."""
