import hashlib, hmac, time

def verify_trail_webhook(secret: str, headers: dict, body: bytes, tolerance: int = 300) -> bool:
    """True when a Trail webhook request is authentic and recent (headers lower-cased)."""
    timestamp = headers.get("trail-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False  # missing, or too old: a replay
    signed = timestamp.encode() + b"." + body
    expected = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("trail-signature", ""))
