#!/usr/bin/env python3
"""Prints the TOTP code (RFC 6238: HMAC-SHA-1, 30-second steps, 6 digits) of a base32 secret, STEPS
steps from now: the tests' own implementation, independent of the server's.

usage: totp.py SECRET [STEPS]
"""
import base64
import hashlib
import hmac
import struct
import sys
import time

secret = sys.argv[1]
key = base64.b32decode(secret + "=" * (-len(secret) % 8))
counter = int(time.time()) // 30 + int(sys.argv[2] if len(sys.argv) > 2 else 0)
mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
offset = mac[-1] & 0x0F
print("%06d" % ((struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 1000000))
