// garnetd's configuration: defaults < JSON config file < environment < command-line flags.
//
// JSON file (every key optional; unknown keys are an error so typos do not go unnoticed):
//   { "data_dir": "/var/lib/garnet", "socket": "/run/garnet/garnetd.sock",
//     "listen": "127.0.0.1:7420", "token": "...", "token_file": "/etc/garnet/token",
//     "base_url": "https://huggingface.co", "hf_token": "...", "catalog":
//     "/etc/garnet/catalog.json", "default_ctx": 4096, "keep_alive_seconds": 300, "parallel": 4,
//     "max_queue": 16, "max_loaded_models": 3, "memory_limit": "24GiB", "threads": 0,
//     "backend": "cpu",
//     "max_prompt_bytes": 1048576, "mirror_listen": "127.0.0.1:0",
//     "http_listen": "127.0.0.1:11435", "http_allowed_hosts": "myhost,myhost.lan",
//     "cors_origin": "" }
// Found at --config PATH, else $GARNET_CONFIG, else $XDG_CONFIG_HOME/garnet/garnetd.json (or
// ~/.config/garnet/garnetd.json) when that file exists.
//
// Environment: GARNET_HOME, GARNET_SOCKET, GARNET_LISTEN, GARNET_TOKEN, GARNET_BASE_URL (or
// GARNET_MIRROR, GARNET_HTTP_LISTEN,
// HF_ENDPOINT), HF_TOKEN, GARNET_CATALOG, GARNET_KEEP_ALIVE, GARNET_PARALLEL, GARNET_CTX,
// GARNET_BACKEND.
// Flags: --data-dir --socket --listen --token --token-file --base-url --catalog --ctx
// --keep-alive --parallel --max-queue --max-loaded --memory-limit --threads --backend
// --mirror-listen
// --http-listen --http-allowed-hosts --cors-origin.
//
// Socket: $XDG_RUNTIME_DIR/garnet/garnetd.sock, or /tmp/garnet-<uid>/garnetd.sock when
// XDG_RUNTIME_DIR is unset. "off" disables the Unix socket (then `listen` is required).
//
// Thread-safety: plain values and pure functions (Load reads files and the environment).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/base/status.h"

namespace garnet::daemon {

struct Config {
  std::string data_dir;  // empty: registry::DefaultDataDir()
  std::string socket;    // empty: DefaultSocketPath(); "off": no Unix socket
  std::string listen;    // optional TCP "host:port"
  std::string token;     // required for a non-loopback `listen`
  std::string base_url;  // empty: $GARNET_MIRROR / $HF_ENDPOINT / https://huggingface.co
  std::string hf_token;
  std::string catalog;  // user catalog file (adds/overrides entries)
  uint32_t default_ctx = 4096;
  int64_t keep_alive_seconds = 300;  // < 0: forever
  uint32_t parallel = 4;             // sequences per model at once
  uint32_t max_queue = 16;           // requests waiting per model beyond `parallel`
  uint32_t max_loaded_models = 3;
  uint64_t memory_limit = 0;  // bytes for loaded models; 0: available host RAM
  uint32_t threads = 0;       // engine threads; 0: all cores
  // Inference backend for loads that do not name one: "cpu", "vulkan", or "auto" (Vulkan when
  // this machine has a GPU, else — or when the model cannot load there — the CPU).
  std::string backend = "cpu";
  uint64_t max_prompt_bytes = 1 << 20;
  uint32_t download_attempts = 6;  // tries per byte range before a pull fails (transient errors)
  std::string mirror_listen;       // serve the store read-only over HTTP ("127.0.0.1:0")
  std::string http_listen;         // OpenAI-compatible HTTP + /metrics ("127.0.0.1:11435")
  std::vector<std::string> http_allowed_hosts;  // extra Host header values for http_listen
  std::string cors_origin;  // Access-Control-Allow-Origin for http_listen; empty: none
  std::string config_file;  // the file that was read (for logs), empty if none
};

// Builds the configuration from `args` (argv without the program name), the environment (via
// `getenv`, injectable for tests) and the config file. InvalidArgument names the flag, key or
// variable at fault; NotFound when an explicitly named config file is missing.
Result<Config> LoadConfig(const std::vector<std::string>& args,
                          const std::function<const char*(const char*)>& getenv);

// Checks cross-field rules: a non-loopback `listen` needs a token (PermissionDenied otherwise),
// ranges of numeric fields, socket/listen not both off.
Status ValidateConfig(const Config& config);

// The default Unix socket path (see the file comment).
std::string DefaultSocketPath(const std::function<const char*(const char*)>& getenv);

// True for "localhost", 127.0.0.0/8, "::1" / "[::1]" hosts. `address` is "host:port".
bool IsLoopbackAddress(const std::string& address);

// Usage text for garnetd --help.
std::string ConfigUsage();

}  // namespace garnet::daemon
