"""Units for people: every command and report writes sizes the same way (binary prefixes, 1 KiB = 1024 B)."""
from __future__ import annotations


def human_bytes(n: float | None) -> str:
    """'512 B', '12.3 KiB', '4.0 MiB', '1.2 GiB'; '-' for None."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def escape_control(text: str) -> str:
    """`text` with its control characters (C0, DEL, C1) written as `\\x1b`, `\\x9b`: safe to print to a terminal."""
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in text)
