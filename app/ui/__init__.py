"""The desktop app (PySide6): thin views over app.core."""
