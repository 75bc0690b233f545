"""Keep the system's OpenSSL (libssl, libcrypto) and idna's tables out of a whalescale process
until used.

Nothing in the agent speaks TLS or needs OpenSSL's hashes: its ciphers and X25519
come from `cryptography`, whose wheel carries its own OpenSSL, and its hashes are
BLAKE2 (CPython's own `_blake2`). Yet trio imports `ssl` (for `trio.SSLStream`) and
`hmac` (for DTLS cookies), and `hmac`/`hashlib` import `_hashlib`: that maps and
initialises the system's libcrypto and libssl, 4.5 MiB of the idle agent's RSS
(issue #13's target is 40 MB; `whalescale bench start --imports`).

So, before anything else is imported (`whalescale/__init__.py`):
- `ssl` (and `idna`, 0.8 MiB of Unicode tables trio uses for host names) is a
  stand-in module that imports the real one on the first attribute anything reads
  from it (trio only reads them inside its functions);
- `hashlib` and `hmac` are imported without `_hashlib`: CPython's own SHA-2, SHA-3,
  BLAKE2 and `compare_digest` serve, and OpenSSL-only names (`pbkdf2_hmac`,
  `scrypt`, `ripemd160`) are missing in this process. `_hashlib` is importable
  again afterwards for whatever asks for it by name.

Both only when the module has not been imported yet (a test runner may have).
"""

from __future__ import annotations

import importlib
import sys
import types

# Imported by trio at its own import, used only inside functions the agent seldom or
# never calls: TLS, and IDNA for host names given to trio's getaddrinfo (0.8 MiB of tables).
DEFERRED = ("ssl", "idna")


class DeferredModule(types.ModuleType):
    """Stands in `sys.modules` for a module until one of its attributes is read; then
    the module is imported and its namespace copied into this stand-in, which holders of
    the stand-in keep using."""

    def __getattr__(self, name: str) -> object:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, name)


def defer() -> None:
    for name in DEFERRED:
        if name not in sys.modules:
            sys.modules[name] = DeferredModule(name)
    if "hashlib" not in sys.modules and "_hashlib" not in sys.modules:
        sys.modules["_hashlib"] = None  # type: ignore[assignment]  # import raises ImportError
        try:
            import hashlib  # noqa: F401
            import hmac  # noqa: F401
        finally:
            del sys.modules["_hashlib"]
