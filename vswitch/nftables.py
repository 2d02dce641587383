"""libnftables, the library `nft` itself is built on, through ctypes: a
ruleset change is one script run as one kernel transaction, all of it or
nothing. (Debian's python3-nftables wraps the same calls, but only for the
system Python.)"""

from __future__ import annotations

import ctypes
import ctypes.util

from .errors import VswitchError

NFT_CTX_DEFAULT = 0


class NftError(VswitchError):
    """libnftables is missing, or refused a script (its message says why)."""


class Nftables:
    def __init__(self):
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise NftError(f"libnftables is not installed ({e}): apt install nftables") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        for fn in (lib.nft_ctx_buffer_output, lib.nft_ctx_buffer_error):
            fn.argtypes = [ctypes.c_void_p]
        for fn in (lib.nft_ctx_get_output_buffer, lib.nft_ctx_get_error_buffer):
            fn.argtypes = [ctypes.c_void_p]
            fn.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self.lib = lib
        self.ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)

    def run(self, script: str) -> str:
        """Run an nft script (one transaction); its output, or NftError."""
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, script.encode())
        output = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode()
        error = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode()
        if rc != 0:
            raise NftError(error.strip() or f"nft failed ({rc})")
        return output

    def close(self):
        if self.ctx:
            self.lib.nft_ctx_free(self.ctx)
            self.ctx = None
