"""The system's OpenSSL stays out of a whalescale process until something uses it (RSS:
issue #13), and whatever does use it still gets it. Fresh interpreters: this one's
test runner may have imported ssl already."""

import subprocess
import sys

import pytest


def run(code: str) -> str:
    prelude = ("import sys\n"
               "def openssl():\n"
               "    maps = open('/proc/self/maps').read()\n"
               "    return sorted({n for n in ('libssl', 'libcrypto', '_ssl.', '_hashlib')"
               " if n in maps})\n")
    out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_agents_imports_map_no_system_openssl_nor_idna():
    assert run("import whalescale.agent.agent, trio\nprint(openssl(), type(sys.modules['idna']))"
               ) == "[] <class 'whalescale.deferred_imports.DeferredModule'>"


def test_the_check_sees_openssl_once_it_is_used():
    # The control: the maps show it as soon as something reads from the stand-in.
    assert run("import whalescale, ssl\nprint(openssl())") == "[]"
    assert "libssl" in run("import whalescale, ssl\nssl.PROTOCOL_TLS_CLIENT\nprint(openssl())")


@pytest.mark.parametrize("use", [
    "import ssl; print(ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED)",
    "import trio._ssl as t; print(t._stdlib_ssl.MemoryBIO().pending)",
    "import hashlib; print(hashlib.sha256(b'abc').hexdigest(), hashlib.sha3_256(b'').digest())",
    "import hmac; print(hmac.new(b'k', b'm', 'sha256').hexdigest(), hmac.compare_digest(b'', b''))",
    "import hashlib; print(hashlib.blake2s(b'abc', digest_size=8, key=b'k').hexdigest())",
    "import trio._socket as t; print(t._idna.encode('bücher.example', uts46=True))",
])
def test_what_uses_ssl_or_hashes_still_gets_the_same_answers(use):
    assert run(f"import whalescale, trio\n{use}") == run(use)
