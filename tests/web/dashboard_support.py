"""What the dashboard tests share: window sizes."""

DESKTOP = (1280, 900)
PHONE = (375, 812)
