#include "daemon/config.h"

#include <unistd.h>

#include <charconv>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/plan/planner.h"

namespace garnet::daemon {
namespace {

using GetEnv = std::function<const char*(const char*)>;

std::string Env(const GetEnv& getenv, const char* name) {
  const char* v = getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

template <typename T>
Status ParseInt(std::string_view what, std::string_view text, T lo, T hi, T* out) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || p != end || text.empty()) {
    return Status::InvalidArgument(what, "\"" + std::string(text) + "\" is not an integer");
  }
  if (v < static_cast<int64_t>(lo) || v > static_cast<int64_t>(hi)) {
    return Status::InvalidArgument(what, std::to_string(v) + " is out of range [" +
                                             std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  *out = static_cast<T>(v);
  return Status::OK();
}

constexpr uint32_t kMaxCtx = 1u << 20;

// One setter per key, shared by the file, the environment and the flags.
Status Set(Config& c, std::string_view key, const std::string& value, std::string_view origin) {
  const std::string what = std::string(origin) + " " + std::string(key);
  if (key == "data_dir") {
    c.data_dir = value;
  } else if (key == "socket") {
    c.socket = value;
  } else if (key == "listen") {
    c.listen = value;
  } else if (key == "token") {
    c.token = value;
  } else if (key == "token_file") {
    std::ifstream in(value);
    if (!in) return Status::NotFound(what, "cannot read the token file");
    std::string tok;
    std::getline(in, tok);
    while (!tok.empty() && (tok.back() == '\r' || tok.back() == ' ')) tok.pop_back();
    if (tok.empty()) return Status::InvalidArgument(what, "the token file is empty");
    c.token = tok;
  } else if (key == "base_url") {
    if (value.rfind("http://", 0) != 0 && value.rfind("https://", 0) != 0) {
      return Status::InvalidArgument(what, "must start with http:// or https://");
    }
    c.base_url = value;
    while (c.base_url.size() > 8 && c.base_url.back() == '/') c.base_url.pop_back();
  } else if (key == "hf_token") {
    c.hf_token = value;
  } else if (key == "catalog") {
    c.catalog = value;
  } else if (key == "default_ctx") {
    return ParseInt<uint32_t>(what, value, 16, kMaxCtx, &c.default_ctx);
  } else if (key == "keep_alive_seconds") {
    return ParseInt<int64_t>(what, value, -1, int64_t{365} * 86400, &c.keep_alive_seconds);
  } else if (key == "parallel") {
    return ParseInt<uint32_t>(what, value, 1, 256, &c.parallel);
  } else if (key == "max_queue") {
    return ParseInt<uint32_t>(what, value, 0, 100000, &c.max_queue);
  } else if (key == "max_loaded_models") {
    return ParseInt<uint32_t>(what, value, 1, 64, &c.max_loaded_models);
  } else if (key == "memory_limit") {
    if (value == "0") {
      c.memory_limit = 0;
      return Status::OK();
    }
    auto bytes = plan::ParseByteSize(value);
    if (!bytes.ok()) return bytes.status().WithContext(what);
    c.memory_limit = *bytes;
  } else if (key == "threads") {
    return ParseInt<uint32_t>(what, value, 0, 1024, &c.threads);
  } else if (key == "backend") {
    if (value != "auto" && value != "cpu" && value != "vulkan") {
      return Status::InvalidArgument(what, "must be auto, cpu or vulkan");
    }
    c.backend = value;
  } else if (key == "max_prompt_bytes") {
    return ParseInt<uint64_t>(what, value, 1, uint64_t{1} << 30, &c.max_prompt_bytes);
  } else if (key == "download_attempts") {
    return ParseInt<uint32_t>(what, value, 1, 100, &c.download_attempts);
  } else if (key == "mirror_listen") {
    c.mirror_listen = value;
  } else if (key == "http_listen") {
    c.http_listen = value;
  } else if (key == "http_allowed_hosts") {
    c.http_allowed_hosts.clear();
    size_t start = 0;
    while (start <= value.size()) {
      const size_t comma = value.find(',', start);
      std::string h =
          value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      for (char& ch : h) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (!h.empty()) c.http_allowed_hosts.push_back(h);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } else if (key == "cors_origin") {
    c.cors_origin = value;
  } else {
    return Status::InvalidArgument(origin, "unknown setting \"" + std::string(key) + "\"");
  }
  return Status::OK();
}

Status ApplyFile(Config& c, const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("config file " + path, "cannot be opened");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("config file " + path, "not a JSON object");
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::string value;
    if (it.value().is_string()) {
      value = it.value().get<std::string>();
    } else if (it.value().is_number_integer()) {
      value = std::to_string(it.value().get<int64_t>());
    } else {
      return Status::InvalidArgument("config file " + path,
                                     "\"" + it.key() + "\" must be a string or an integer");
    }
    GARNET_RETURN_IF_ERROR(Set(c, it.key(), value, "config file"));
  }
  c.config_file = path;
  return Status::OK();
}

struct FlagSpec {
  const char* flag;
  const char* key;
};
constexpr FlagSpec kFlags[] = {
    {"--data-dir", "data_dir"},
    {"--socket", "socket"},
    {"--listen", "listen"},
    {"--token", "token"},
    {"--token-file", "token_file"},
    {"--base-url", "base_url"},
    {"--catalog", "catalog"},
    {"--ctx", "default_ctx"},
    {"--keep-alive", "keep_alive_seconds"},
    {"--parallel", "parallel"},
    {"--max-queue", "max_queue"},
    {"--max-loaded", "max_loaded_models"},
    {"--memory-limit", "memory_limit"},
    {"--threads", "threads"},
    {"--backend", "backend"},
    {"--max-prompt-bytes", "max_prompt_bytes"},
    {"--mirror-listen", "mirror_listen"},
    {"--download-attempts", "download_attempts"},
    {"--http-listen", "http_listen"},
    {"--http-allowed-hosts", "http_allowed_hosts"},
    {"--cors-origin", "cors_origin"},
};

}  // namespace

std::string DefaultSocketPath(const GetEnv& getenv) {
  const std::string xdg = Env(getenv, "XDG_RUNTIME_DIR");
  if (!xdg.empty() && xdg[0] == '/') return xdg + "/garnet/garnetd.sock";
  return "/tmp/garnet-" + std::to_string(getuid()) + "/garnetd.sock";
}

Result<Config> LoadConfig(const std::vector<std::string>& args, const GetEnv& getenv) {
  Config c;
  // Split flags first so --config is known before anything is applied.
  std::vector<std::pair<std::string, std::string>> flags;
  std::string config_path;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    std::string value;
    bool has_value = false;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_value = true;
    }
    if (!has_value) {
      if (i + 1 >= args.size()) return Status::InvalidArgument("flag " + a, "needs a value");
      value = args[++i];
    }
    if (a == "--config") {
      config_path = value;
      continue;
    }
    bool known = false;
    for (const FlagSpec& f : kFlags) {
      if (a == f.flag) {
        flags.emplace_back(f.key, value);
        known = true;
        break;
      }
    }
    if (!known) return Status::InvalidArgument("flag " + a, "unknown (see garnetd --help)");
  }

  if (config_path.empty()) config_path = Env(getenv, "GARNET_CONFIG");
  if (!config_path.empty()) {
    GARNET_RETURN_IF_ERROR(ApplyFile(c, config_path));
  } else {
    std::string dir = Env(getenv, "XDG_CONFIG_HOME");
    if (dir.empty() && !Env(getenv, "HOME").empty()) dir = Env(getenv, "HOME") + "/.config";
    if (!dir.empty()) {
      const std::string path = dir + "/garnet/garnetd.json";
      if (access(path.c_str(), F_OK) == 0) GARNET_RETURN_IF_ERROR(ApplyFile(c, path));
    }
  }

  struct EnvSpec {
    const char* var;
    const char* key;
  };
  constexpr EnvSpec kEnv[] = {
      {"GARNET_HOME", "data_dir"},           {"GARNET_SOCKET", "socket"},
      {"GARNET_LISTEN", "listen"},           {"GARNET_TOKEN", "token"},
      {"HF_ENDPOINT", "base_url"},           {"GARNET_MIRROR", "base_url"},
      {"GARNET_BASE_URL", "base_url"},       {"HF_TOKEN", "hf_token"},
      {"GARNET_CATALOG", "catalog"},         {"GARNET_KEEP_ALIVE", "keep_alive_seconds"},
      {"GARNET_PARALLEL", "parallel"},       {"GARNET_CTX", "default_ctx"},
      {"GARNET_HTTP_LISTEN", "http_listen"}, {"GARNET_BACKEND", "backend"},
  };
  for (const EnvSpec& e : kEnv) {
    const std::string v = Env(getenv, e.var);
    if (!v.empty()) GARNET_RETURN_IF_ERROR(Set(c, e.key, v, std::string("environment ") + e.var));
  }
  for (const auto& [key, value] : flags) GARNET_RETURN_IF_ERROR(Set(c, key, value, "flag"));

  if (c.socket.empty()) c.socket = DefaultSocketPath(getenv);
  return c;
}

bool IsLoopbackAddress(const std::string& address) {
  std::string host = address;
  if (!host.empty() && host[0] == '[') {
    const size_t close = host.find(']');
    if (close == std::string::npos) return false;
    host = host.substr(1, close - 1);
  } else if (const size_t colon = host.rfind(':'); colon != std::string::npos) {
    host = host.substr(0, colon);
  }
  if (host == "localhost" || host == "::1") return true;
  // 127.0.0.0/8, written as a dotted quad.
  if (host.rfind("127.", 0) != 0) return false;
  int dots = 0;
  for (char ch : host) {
    if (ch == '.') {
      ++dots;
    } else if (ch < '0' || ch > '9') {
      return false;
    }
  }
  return dots == 3;
}

Status ValidateConfig(const Config& c) {
  if (c.socket == "off" && c.listen.empty()) {
    return Status::InvalidArgument("config",
                                   "the Unix socket is off and no TCP listen address "
                                   "is set: garnetd would not be reachable");
  }
  if (c.socket != "off" && (c.socket.empty() || c.socket[0] != '/')) {
    return Status::InvalidArgument("config socket", "must be an absolute path");
  }
  if (!c.listen.empty()) {
    if (c.listen.rfind(':') == std::string::npos) {
      return Status::InvalidArgument("config listen", "\"" + c.listen + "\" is not host:port");
    }
    if (!IsLoopbackAddress(c.listen) && c.token.empty()) {
      return Status::PermissionDenied(
          "config listen", "refusing to listen on non-loopback address " + c.listen +
                               " without a token; set --token, GARNET_TOKEN or token_file");
    }
  }
  if (!c.http_listen.empty() && !IsLoopbackAddress(c.http_listen) && c.token.empty()) {
    return Status::PermissionDenied("config http_listen",
                                    "refusing to listen on non-loopback "
                                    "address " +
                                        c.http_listen + " without a token");
  }
  if (!c.mirror_listen.empty() && !IsLoopbackAddress(c.mirror_listen) && c.token.empty()) {
    return Status::PermissionDenied("config mirror_listen",
                                    "the mirror serves on loopback only unless a token is set");
  }
  return Status::OK();
}

std::string ConfigUsage() {
  return R"(usage: garnetd [--config FILE] [flags]

  --data-dir DIR        model store (default $GARNET_HOME or $XDG_DATA_HOME/garnet)
  --socket PATH|off     Unix socket (default $XDG_RUNTIME_DIR/garnet/garnetd.sock)
  --listen HOST:PORT    also listen on TCP (loopback unless a token is set)
  --token TOKEN         require "authorization: Bearer TOKEN" metadata
  --token-file FILE     read the token from a file
  --base-url URL        model downloads from this hub or mirror (default https://huggingface.co)
  --catalog FILE        user catalog that adds or overrides entries
  --ctx N               default context per sequence (4096)
  --keep-alive SECONDS  keep models loaded after last use (300; -1 forever)
  --parallel N          sequences per model at once (4)
  --max-queue N         requests waiting per model beyond --parallel (16)
  --max-loaded N        models loaded at once (3)
  --memory-limit SIZE   memory for loaded models, e.g. 24GiB (default: available RAM)
  --threads N           engine threads (0: all cores)
  --backend B           cpu (default), vulkan, or auto (Vulkan when a GPU exists, else CPU)
  --max-prompt-bytes N  largest prompt accepted (1048576)
  --mirror-listen H:P   also serve the store read-only over HTTP (hub URL shape)
  --download-attempts N tries per byte range on transient download errors (6)
  --http-listen H:P     OpenAI-compatible HTTP API and /metrics (loopback unless a token is set)
  --http-allowed-hosts  extra Host header names accepted by --http-listen (comma-separated)
  --cors-origin ORIGIN  send Access-Control-Allow-Origin for --http-listen (default: none)
)";
}

}  // namespace garnet::daemon
