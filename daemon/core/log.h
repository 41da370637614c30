// Logging for csvd: one line per event on stderr, every line prefixed with
// the node id and, where there is one, the volume and its epoch; outside
// journald (JOURNAL_STREAM unset) also with the UTC time in milliseconds
// ("2026-11-21T17:52:15.123Z"), which journald adds itself.
//
// Thread-safety: Log() may be called from any thread.
#pragma once

#include <cstdint>
#include <exception>
#include <sstream>
#include <string>
#include <string_view>

namespace csv::core {

enum class Level { kDebug, kInfo, kWarning, kError };

// Set once at start-up, before any other thread runs.
void SetLogNode(uint32_t node);
void SetLogLevel(Level level);

void LogLine(Level level, std::string_view volume, uint64_t epoch, const std::string& text);

// Logs a coroutine's exception (co_spawn completion handler) as a warning
// prefixed with `what`; does nothing for a null exception_ptr.
void LogException(const char* what, std::exception_ptr e);

// One log line, written when the object dies at the end of the statement.
class LogMessage {
 public:
  LogMessage(Level level, std::string_view volume, uint64_t epoch)
      : level_(level), volume_(volume), epoch_(epoch) {}
  ~LogMessage() { LogLine(level_, volume_, epoch_, os_.str()); }
  std::ostream& stream() { return os_; }

 private:
  Level level_;
  std::string volume_;
  uint64_t epoch_;
  std::ostringstream os_;
};

}  // namespace csv::core

// LOG(kInfo) << "text";   VLOG(kInfo, volume, epoch) << "text";
#define LOG(level) ::csv::core::LogMessage(::csv::core::Level::level, "", 0).stream()
#define VLOG(level, vol, ep) ::csv::core::LogMessage(::csv::core::Level::level, vol, ep).stream()
