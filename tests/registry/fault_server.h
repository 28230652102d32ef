// An in-process HTTP file server on 127.0.0.1 (ephemeral port) with fault injection, shaped like
// the Hugging Face hub: HEAD/GET on any path registered with AddFile, Range support, and the
// X-Linked-Size / X-Linked-Etag headers. Faults are armed per test and consumed per response.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace garnet::registry::testing {

struct Faults {
  // The next `status_count` requests (HEAD or GET) answer `status` with no body.
  std::atomic<int> status{0};
  std::atomic<int> status_count{0};
  // Every request answers this status (404, 401, 403...); 0 = off.
  std::atomic<int> always_status{0};
  // The next `drop_count` GET bodies close the connection after `drop_after` bytes (when
  // drop_random is set, after a random number of bytes below the response length).
  std::atomic<int> drop_count{0};
  std::atomic<int64_t> drop_after{0};
  std::atomic<bool> drop_random{false};
  // The next `stall_count` GET bodies stop sending for `stall_ms` after `stall_after` bytes,
  // then close.
  std::atomic<int> stall_count{0};
  std::atomic<int64_t> stall_after{0};
  std::atomic<int> stall_ms{0};
  // Flip this byte of every body that covers it (-1 = off): the content no longer matches the
  // advertised sha256.
  std::atomic<int64_t> corrupt_offset{-1};
  // Answer ranged requests with 200 and the whole file.
  std::atomic<bool> ignore_range{false};
  // Advertise X-Linked-Size / X-Linked-Etag.
  std::atomic<bool> linked_headers{true};
  // Advertise this size instead of the real one (0 = real): an upstream that lies.
  std::atomic<uint64_t> advertised_size{0};
  // The next GET body that starts at byte 0 stops after `hold_first_after` bytes (-1 = off) until
  // `hold_until_bodies` GET bodies have been sent completely, then goes on; after 10 s it goes on
  // anyway and sets `hold_timed_out` (the client never fetched the others meanwhile).
  std::atomic<int64_t> hold_first_after{-1};
  std::atomic<int> hold_until_bodies{0};
  std::atomic<bool> hold_timed_out{false};
  // Sleep this many microseconds per 64 KiB sent (slows transfers so tests can act mid-way).
  std::atomic<int> throttle_us{0};
  // Send bodies chunked, without Content-Length (and without the linked headers): the size is
  // unknown until the end.
  std::atomic<bool> chunked{false};
  // When non-empty, answer 401 unless "Authorization: Bearer <token>" is sent.
  std::string required_token;  // set before requests start
};

class FaultServer {
 public:
  FaultServer();
  ~FaultServer();

  // Serves `content` at URL path `path` ("/org/repo/resolve/main/x.gguf").
  void AddFile(const std::string& path, std::string content);
  std::string Url(const std::string& path) const;
  std::string BaseUrl() const;
  int port() const { return port_; }
  Faults& faults() { return faults_; }

  uint64_t body_bytes_sent() const { return body_bytes_.load(); }
  int requests() const { return requests_.load(); }
  int get_requests() const { return gets_.load(); }
  int ranged_requests() const { return ranged_.load(); }
  void ResetCounters();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  Faults faults_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const std::string>> files_;
  std::map<std::string, std::string> sha_;
  std::atomic<uint64_t> body_bytes_{0};
  std::atomic<int> complete_bodies_{0};  // GET bodies sent to their last byte
  std::atomic<int> requests_{0};
  std::atomic<int> gets_{0};
  std::atomic<int> ranged_{0};
  std::atomic<bool> stopping_{false};
};

// Deterministic pseudo-random bytes.
std::string RandomBytes(size_t n, uint32_t seed);

}  // namespace garnet::registry::testing
