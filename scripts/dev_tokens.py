"""Development tokens for the tregov API, signed like an OIDC provider's (RS256), for the
emulator demo and for trying the API without Amazon Cognito. Runs with the Python of the
project's moto virtualenv (`scripts/install-moto`), which has `cryptography`.

  keys DIR                      a new RSA key DIR/signing.pem and its JWKS DIR/jwks.json
                                (kid `tregov-dev`): point `[auth] jwks_file` at it
  token KEY SUB ISSUER AUDIENCE [TTL_SECONDS]
                                a token for user SUB, valid TTL seconds (default 3600)

Never use these keys for a real TRE: its tokens come from its identity provider.
"""
import base64
import json
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KID = "tregov-dev"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def number(n):
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def keys(directory):
    os.makedirs(directory, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(os.path.join(directory, "signing.pem"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public = key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
                      "n": number(public.n), "e": number(public.e)}]}
    with open(os.path.join(directory, "jwks.json"), "w") as f:
        json.dump(jwks, f, indent=2)


def token(key_path, sub, issuer, audience, ttl=3600):
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": KID}
    claims = {"sub": sub, "iss": issuer, "aud": audience, "iat": now, "exp": now + int(ttl),
              "token_use": "id"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "keys":
        keys(args[1])
    elif len(args) in (5, 6) and args[0] == "token":
        print(token(*args[1:]))
    else:
        sys.exit(__doc__)
