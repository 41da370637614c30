// Peer authentication: mutual challenge-response with HMAC-SHA256 over a
// cluster key shared by all nodes (a file, like Corosync's authkey).
//
// Handshake on every new TCP connection, both sides at once:
//   1. send HELLO {REQ_ID 0, ABI_VERSION, NODE_ID self, DATA nonce[32]}
//   2. read the peer's HELLO; the connecting side checks the node id it
//      dialled, the accepting side that the id is a configured node and a
//      current member of the CPG group
//   3. send REPLY {REQ_ID 0, ERRNO 0, DATA proof}, proof =
//      HMAC(key, "csvfs-peer-v1" | sender id | receiver id |
//                sender nonce | receiver nonce)   (ids u32 little-endian)
//   4. read the peer's REPLY and compare its proof in constant time.
// A proof names its sender, so a proof cannot be reflected back.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace csv::core {

inline constexpr size_t kNonceSize = 32;
inline constexpr size_t kProofSize = 32;
using Nonce = std::array<uint8_t, kNonceSize>;
using Proof = std::array<uint8_t, kProofSize>;

// Reads a key file (16..4096 bytes). nullopt with *error if unusable.
std::optional<std::vector<uint8_t>> LoadClusterKey(const std::string& path, std::string* error);

Nonce RandomNonce();
Proof MakeProof(std::span<const uint8_t> key, uint32_t sender, uint32_t receiver,
                std::span<const uint8_t> sender_nonce, std::span<const uint8_t> receiver_nonce);
bool ProofMatches(std::span<const uint8_t> a, const Proof& b);

}  // namespace csv::core
