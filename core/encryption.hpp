#pragma once
// The user's encryption choice (--encryption, the RPC's `encryption` session field) and what
// it means for one connection: whether an outgoing connection starts with the MSE handshake
// (core/mse.hpp), whether a failed MSE attempt is retried in plaintext, which incoming
// connections are taken, and the words a user reads when a peer and the choice do not meet.
// Pure: the peer worker's connections and listener ask, the orchestrator and CLI parse.
#include <optional>
#include <string>
#include <string_view>

#include "core/mse.hpp"

namespace pw {

enum class Encryption {
    prefer,   // MSE first (RC4 preferred), plaintext where the peer will not
    require,  // MSE with RC4 only: never a plaintext byte of the BitTorrent protocol
    off,      // plain BitTorrent only, both ways
};

inline std::optional<Encryption> parse_encryption(std::string_view text) {
    if (text == "prefer") return Encryption::prefer;
    if (text == "require") return Encryption::require;
    if (text == "off") return Encryption::off;
    return std::nullopt;
}

inline std::string_view to_string(Encryption encryption) {
    switch (encryption) {
        case Encryption::prefer: return "prefer";
        case Encryption::require: return "require";
        case Encryption::off: return "off";
    }
    return "prefer";
}

// --- outgoing ---

// The MSE policy a first attempt runs with, or nullopt: plain BitTorrent at once.
inline std::optional<mse::Policy> outgoing_mse_policy(Encryption encryption) {
    switch (encryption) {
        case Encryption::prefer: return mse::Policy::prefer_rc4;
        case Encryption::require: return mse::Policy::require_rc4;
        case Encryption::off: return std::nullopt;
    }
    return std::nullopt;
}

// A failed MSE attempt (the peer closed, stalled, or answered what is not MSE) is retried in
// plaintext on a new connection only when plaintext is allowed.
inline bool retries_in_plaintext(Encryption encryption) { return encryption == Encryption::prefer; }

// Why an outgoing MSE handshake failed, for a policy that allows no plaintext retry (or the
// retry is not worth it: the platform has no RC4).
inline std::string explain_mse_failure(Encryption encryption, std::string_view reason) {
    std::string why = "encryption handshake failed: ";
    why += reason;
    if (encryption == Encryption::require) {
        why += " (encryption required by us, --encryption require: the peer may speak plaintext only)";
    }
    return why;
}

// Why a plaintext BitTorrent handshake failed when the peer closed or reset it before
// answering: a peer that requires encryption does just that.
inline std::string explain_plain_failure(Encryption encryption, bool after_mse, std::string_view reason) {
    std::string why = "handshake failed: ";
    why += reason;
    if (encryption == Encryption::off) {
        why += " (plaintext only, --encryption off: the peer may require encryption)";
    } else if (after_mse) {
        why += " (after the encrypted handshake failed too: the peer refuses both)";
    }
    return why;
}

// --- incoming ---

enum class IncomingAction { take_plain, run_mse, refuse };

inline IncomingAction incoming_action(Encryption encryption, mse::Incoming kind) {
    switch (kind) {
        case mse::Incoming::need_more: return IncomingAction::refuse;  // the caller waits instead
        case mse::Incoming::plain:
            return encryption == Encryption::require ? IncomingAction::refuse : IncomingAction::take_plain;
        case mse::Incoming::encrypted:
            return encryption == Encryption::off ? IncomingAction::refuse : IncomingAction::run_mse;
    }
    return IncomingAction::refuse;
}

// The responder's policy for an incoming MSE handshake.
inline mse::Policy incoming_mse_policy(Encryption encryption) {
    return encryption == Encryption::require ? mse::Policy::require_rc4 : mse::Policy::prefer_rc4;
}

inline std::string_view incoming_refusal(Encryption encryption, mse::Incoming kind) {
    if (kind == mse::Incoming::plain && encryption == Encryption::require) {
        return "plaintext handshake, and --encryption require takes encrypted peers only";
    }
    if (kind == mse::Incoming::encrypted && encryption == Encryption::off) {
        return "encrypted handshake, and --encryption off takes plaintext peers only";
    }
    return "not a BitTorrent handshake";
}

}  // namespace pw
