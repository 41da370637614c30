#include "core/auth.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

namespace csv::core {

std::optional<std::vector<uint8_t>> LoadClusterKey(const std::string& path, std::string* error) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    *error = "cannot read the cluster key " + path + ": " + std::strerror(errno) +
             " (csvctl keygen on one node, then copy it to the same path on every node)";
    return std::nullopt;
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    *error = "the cluster key " + path + " is readable by others: chmod 600 it";
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> key((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (key.size() < 16 || key.size() > 4096) {
    *error = "the cluster key " + path + " must hold 16 to 4096 bytes";
    return std::nullopt;
  }
  return key;
}

Nonce RandomNonce() {
  Nonce n{};
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1) abort();  // no entropy: unsafe
  return n;
}

Proof MakeProof(std::span<const uint8_t> key, uint32_t sender, uint32_t receiver,
                std::span<const uint8_t> sender_nonce, std::span<const uint8_t> receiver_nonce) {
  static constexpr char kLabel[] = "csvfs-peer-v1";
  std::vector<uint8_t> input(kLabel, kLabel + sizeof kLabel - 1);
  for (uint32_t v : {sender, receiver})
    for (int i = 0; i < 4; ++i) input.push_back(static_cast<uint8_t>(v >> (8 * i)));
  input.insert(input.end(), sender_nonce.begin(), sender_nonce.end());
  input.insert(input.end(), receiver_nonce.begin(), receiver_nonce.end());
  Proof out{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), input.data(), input.size(),
       out.data(), &len);
  return out;
}

bool ProofMatches(std::span<const uint8_t> a, const Proof& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), b.size()) == 0;
}

}  // namespace csv::core
