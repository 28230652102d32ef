#include "tests/registry/fault_server.h"

#include <httplib.h>

#include <chrono>
#include <random>

#include "registry/sha256.h"

namespace garnet::registry::testing {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 4) {
    uint32_t v = rng();
    for (size_t k = 0; k < 4 && i + k < n; ++k) s[i + k] = static_cast<char>(v >> (8 * k));
  }
  return s;
}

FaultServer::FaultServer() : server_(std::make_unique<httplib::Server>()) {
  server_->Get(R"(/.*)", [this](const httplib::Request& req, httplib::Response& res) {
    requests_++;
    const bool head = req.method == "HEAD";
    if (!head) gets_++;
    if (!req.ranges.empty()) ranged_++;
    if (int s = faults_.always_status.load(); s != 0) {
      res.status = s;
      return;
    }
    if (faults_.status_count.load() > 0 && faults_.status_count.fetch_sub(1) > 0) {
      res.status = faults_.status.load();
      res.set_content("injected failure", "text/plain");
      return;
    }
    if (!faults_.required_token.empty() &&
        req.get_header_value("Authorization") != "Bearer " + faults_.required_token) {
      res.status = 401;
      return;
    }
    std::shared_ptr<const std::string> file;
    std::string sha;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = files_.find(req.path);
      if (it == files_.end()) {
        res.status = 404;
        res.set_content("not found", "text/plain");
        return;
      }
      file = it->second;
      sha = sha_[req.path];
    }
    uint64_t adv = faults_.advertised_size.load();
    if (faults_.chunked.load()) {
      res.set_chunked_content_provider(
          "application/octet-stream", [this, file](size_t offset, httplib::DataSink& sink) {
            if (offset >= file->size()) {
              sink.done();
              return true;
            }
            size_t n = std::min<size_t>(file->size() - offset, 64 * 1024);
            if (!sink.write(file->data() + offset, n)) return false;
            body_bytes_ += n;
            return true;
          });
      return;
    }
    if (faults_.linked_headers.load()) {
      res.set_header("X-Linked-Size", std::to_string(adv != 0 ? adv : file->size()));
      res.set_header("X-Linked-Etag", "\"" + sha + "\"");
    }
    res.set_header("Accept-Ranges", "bytes");
    if (faults_.ignore_range.load()) {
      // Pretend Range is not supported: httplib answers 200 with the whole body.
      const_cast<httplib::Request&>(req).ranges.clear();
    }
    // Per-response faults, consumed here.
    int64_t drop_at = -1, stall_at = -1;
    if (!head && faults_.drop_count.load() > 0 && faults_.drop_count.fetch_sub(1) > 0) {
      drop_at = faults_.drop_after.load();
      if (faults_.drop_random.load()) {
        static std::mt19937 rng(42);
        static std::mutex rng_mu;
        std::lock_guard<std::mutex> lock(rng_mu);
        drop_at = static_cast<int64_t>(rng() % std::max<size_t>(1, file->size() / 4));
      }
    }
    if (!head && faults_.stall_count.load() > 0 && faults_.stall_count.fetch_sub(1) > 0) {
      stall_at = faults_.stall_after.load();
    }
    auto sent = std::make_shared<int64_t>(0);
    auto first = std::make_shared<int64_t>(-1);  // the body's first byte
    res.set_content_provider(
        file->size(), "application/octet-stream",
        [this, file, drop_at, stall_at, sent, first](size_t offset, size_t length,
                                                     httplib::DataSink& sink) {
          if (*first < 0) *first = static_cast<int64_t>(offset);
          if (int64_t hold = faults_.hold_first_after.load();
              hold >= 0 && *first == 0 && *sent >= hold &&
              faults_.hold_first_after.compare_exchange_strong(hold, -1)) {
            auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
            while (complete_bodies_.load() < faults_.hold_until_bodies.load() &&
                   !stopping_.load()) {
              if (std::chrono::steady_clock::now() >= until) {
                faults_.hold_timed_out = true;
                break;
              }
              std::this_thread::sleep_for(std::chrono::milliseconds(2));
            }
          }
          size_t n = std::min<size_t>(length, 64 * 1024);
          if (drop_at >= 0 && *sent >= drop_at) return false;  // close mid-body
          if (stall_at >= 0 && *sent >= stall_at) {
            auto until = std::chrono::steady_clock::now() +
                         std::chrono::milliseconds(faults_.stall_ms.load());
            while (std::chrono::steady_clock::now() < until && !stopping_.load()) {
              std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
            return false;
          }
          if (drop_at >= 0) n = std::min<size_t>(n, static_cast<size_t>(drop_at - *sent) + 1);
          if (stall_at >= 0) n = std::min<size_t>(n, static_cast<size_t>(stall_at - *sent) + 1);
          std::string chunk = file->substr(offset, n);
          int64_t bad = faults_.corrupt_offset.load();
          if (bad >= 0 && static_cast<uint64_t>(bad) >= offset &&
              static_cast<uint64_t>(bad) < offset + n) {
            chunk[static_cast<size_t>(bad) - offset] ^= 0x5a;
          }
          if (int us = faults_.throttle_us.load(); us > 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(us));
          }
          if (!sink.write(chunk.data(), chunk.size())) return false;
          *sent += static_cast<int64_t>(chunk.size());
          body_bytes_ += chunk.size();
          if (chunk.size() == length) complete_bodies_++;
          return true;
        });
  });
  port_ = server_->bind_to_any_port("127.0.0.1");
  auto returned = std::make_shared<std::atomic<bool>>(false);
  thread_ = std::thread([this, returned] {
    server_->listen_after_bind();
    *returned = true;
  });
  // stop() is a no-op until the accept loop runs: wait for it, so the destructor cannot hang.
  while (!server_->is_running() && !*returned) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

FaultServer::~FaultServer() {
  stopping_ = true;
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

void FaultServer::AddFile(const std::string& path, std::string content) {
  std::string sha = Sha256::HexOf(content);
  std::lock_guard<std::mutex> lock(mu_);
  files_[path] = std::make_shared<const std::string>(std::move(content));
  sha_[path] = sha;
}

std::string FaultServer::BaseUrl() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}
std::string FaultServer::Url(const std::string& path) const {
  return BaseUrl() + path;
}

void FaultServer::ResetCounters() {
  body_bytes_ = 0;
  requests_ = 0;
  gets_ = 0;
  ranged_ = 0;
  complete_bodies_ = 0;
}

}  // namespace garnet::registry::testing
