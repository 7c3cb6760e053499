// The one C++ interface of the samples: a ConvMLP classifier that takes a float NCHW batch of any
// height/width inside its range and returns logits, plus what both samples share (the command line,
// input/output files, top-5, preprocessing read from the model's metadata).
//
// Backends: tensorrt_model.h (a plan from `convmlp-deploy build`) and openvino_model.h (the ONNX
// graphs and IRs `convmlp-deploy export` writes). No dependency beyond the C++17 standard library here.
#pragma once

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace convmlp {

// Exit codes, as the Python CLI: 1 a run-time failure (file, runtime), 2 a usage error.
constexpr int kFailure = 1;
constexpr int kUsage = 2;

// An error with the exit code it ends the program with; the message is one line.
struct Error : std::runtime_error {
  Error(int code_, const std::string& message) : std::runtime_error(message), code(code_) {}
  int code;
};

[[noreturn]] inline void fail(int code, const std::string& message) { throw Error(code, message); }

struct Shape {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t volume() const { return n * c * h * w; }
  std::string str() const {
    return std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
  }
};

// How an image becomes the model's input (timm's pretrained_cfg): resize the shorter side to
// min(height, width) / crop_pct, centre-crop height x width, scale to [0, 1], subtract mean, divide by std.
struct Preprocessing {
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  float crop_pct = 0.875f;
  int height = 224;  // input_size is [channels, height, width]
  int width = 224;
  bool recorded = false;  // read from the model's metadata (else ImageNet's)

  std::string str() const {
    std::ostringstream s;
    s << "mean [" << mean[0] << ", " << mean[1] << ", " << mean[2] << "] std [" << std[0] << ", " << std[1]
      << ", " << std[2] << "] crop_pct " << crop_pct << " size " << height << "x" << width << (recorded ? "" : " (ImageNet default)");
    return s.str();
  }

  // Normalise one RGB image already resized and cropped to h x w (interleaved uint8, HWC) into
  // `out` (3 x h x w floats, CHW).
  void normalize(const uint8_t* rgb, int h, int w, float* out) const {
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < h * w; ++i)
        out[c * h * w + i] = (static_cast<float>(rgb[i * 3 + c]) / 255.0f - mean[c]) / std[c];
  }
};

// "[0.485, 0.456, 0.406]" -> three floats; false when it is not a list of three numbers.
inline bool parse_triple(const std::string& text, std::array<float, 3>* out) {
  std::string s = text;
  for (char& ch : s)
    if (ch == '[' || ch == ']' || ch == ',') ch = ' ';
  std::istringstream in(s);
  std::array<float, 3> v{};
  for (float& x : v)
    if (!(in >> x)) return false;
  std::string rest;
  if (in >> rest) return false;
  *out = v;
  return true;
}

// The preprocessing keys export writes (deploy/modelfile/metadata.py), as found in a model's
// metadata: `get(key)` returns the value or "" when absent.
template <typename Get>
Preprocessing preprocessing_from(Get get) {
  Preprocessing p;
  std::array<float, 3> v{};
  const bool has_mean = parse_triple(get("mean"), &v);
  if (has_mean) p.mean = v;
  const bool has_std = parse_triple(get("std"), &v);
  if (has_std) p.std = v;
  const std::string crop = get("crop_pct");
  if (!crop.empty()) p.crop_pct = std::strtof(crop.c_str(), nullptr);
  std::array<float, 3> size{};
  if (parse_triple(get("input_size"), &size)) {
    p.height = static_cast<int>(size[1]);
    p.width = static_cast<int>(size[2]);
  }
  p.recorded = has_mean && has_std;
  return p;
}

// A ConvMLP classifier, ready to run. infer() may be called from several threads at once.
class Model {
 public:
  virtual ~Model() = default;
  // Logits (N x classes, row-major) of `input` (N x 3 x H x W floats, NCHW, normalised).
  virtual std::vector<float> infer(const std::vector<float>& input, const Shape& shape) = 0;
  virtual Preprocessing preprocessing() const = 0;
  // One line: what runs, in which precision.
  virtual std::string describe() const = 0;
};

// ----------------------------------------------------------------------------- the command line

struct Options {
  std::string model;
  Shape shape;
  std::string input;        // input.bin, or "" for a deterministic pattern
  std::string output;       // --output, or ""
  std::string precision;    // --precision (OpenVINO): f32 or bf16; "" = OpenVINO's default
  int threads = 0;          // --threads (OpenVINO): CPU threads per inference, 0 = OpenVINO's choice
  int parallel = 1;         // --parallel K: K calling threads share the model, each with its own input
  int repeat = 1;           // --repeat R: each thread infers R times and checks every result is the same
  bool allow_host_code = false;  // --allow-host-code (TensorRT)
};

inline int64_t positive(const std::string& text, const char* what) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < 1)
    fail(kUsage, std::string(what) + " must be a positive integer, got '" + text + "'");
  return v;
}

// `prog MODEL N C H W [input.bin] [--output F] [--precision P] [--threads T] [--parallel K] [--repeat R]
// [--allow-host-code]`; `extra` lists the options this sample takes besides --output/--parallel/--repeat.
inline Options parse_options(int argc, char** argv, const std::vector<std::string>& extra, const std::string& usage) {
  Options o;
  std::vector<std::string> pos;
  auto takes = [&](const std::string& opt) { return std::find(extra.begin(), extra.end(), opt) != extra.end(); };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) fail(kUsage, a + " needs a value; usage: " + usage);
      return argv[++i];
    };
    if (a == "--output") {
      o.output = next();
    } else if (a == "--parallel") {
      o.parallel = static_cast<int>(positive(next(), "--parallel"));
    } else if (a == "--repeat") {
      o.repeat = static_cast<int>(positive(next(), "--repeat"));
    } else if (a == "--precision" && takes(a)) {
      o.precision = next();
      if (o.precision == "fp32") o.precision = "f32";  // the project's name for it
      if (o.precision != "f32" && o.precision != "bf16")
        fail(kUsage, "--precision must be f32 or bf16, got '" + o.precision + "'");
    } else if (a == "--threads" && takes(a)) {
      o.threads = static_cast<int>(positive(next(), "--threads"));
    } else if (a == "--allow-host-code" && takes(a)) {
      o.allow_host_code = true;
    } else if (a.size() > 1 && a[0] == '-' && !std::isdigit(static_cast<unsigned char>(a[1]))) {
      fail(kUsage, "unknown option " + a + "; usage: " + usage);
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 5 && pos.size() != 6) fail(kUsage, "usage: " + usage);
  o.model = pos[0];
  o.shape = {positive(pos[1], "N"), positive(pos[2], "C"), positive(pos[3], "H"), positive(pos[4], "W")};
  if (o.shape.c != 3) fail(kUsage, "C must be 3 (RGB), got " + std::to_string(o.shape.c));
  if (o.shape.h < 32 || o.shape.w < 32) fail(kUsage, "H and W must be >= 32 (ConvMLP downsamples by 32)");
  if (pos.size() == 6) o.input = pos[5];
  return o;
}

inline std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(kFailure, "cannot open " + path + ": " + std::strerror(errno));
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// `count` floats from `path` (raw float32, native byte order), or a deterministic pattern for "".
inline std::vector<float> read_input(const std::string& path, int64_t count) {
  std::vector<float> x(static_cast<size_t>(count));
  if (path.empty()) {
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.001f * static_cast<float>(i));
    return x;
  }
  std::vector<char> raw = read_file(path);
  if (raw.size() != x.size() * sizeof(float))
    fail(kUsage, path + " holds " + std::to_string(raw.size()) + " bytes; " + std::to_string(count) +
                     " float32 values (" + std::to_string(x.size() * sizeof(float)) + " bytes) were expected");
  std::memcpy(x.data(), raw.data(), raw.size());
  return x;
}

// Memory available now (MemAvailable of /proc/meminfo), or -1 where it cannot be read.
inline int64_t available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (f >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return -1;
}

inline std::string gib(double bytes) {
  char buf[64];
  if (bytes >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.3g GiB", bytes / (1024.0 * 1024 * 1024));
  else std::snprintf(buf, sizeof buf, "%.3g MiB", bytes / (1024.0 * 1024));
  return buf;
}

// Refuse, before the model is read or compiled, a request that cannot fit in memory: the input (K batches
// with --parallel K) plus, per sample in flight, three live tensors of the largest activation, which is
// 16 floats per input pixel for ConvMLP-S and M and 24 for L (the Python CLI's estimate, deploy/resources.py):
// S's figure is used, so the estimate is a lower bound for every variant.
inline void check_fits(const Shape& s, int parallel) {
  const double pixels = static_cast<double>(s.n) * static_cast<double>(s.h) * static_cast<double>(s.w);
  const double input = pixels * 3 * sizeof(float) * parallel;
  const double need = input + pixels * 3 * 16 * sizeof(float) * parallel;
  const int64_t free = available_bytes();
  if (free >= 0 && need > static_cast<double>(free))
    fail(kUsage, s.str() + (parallel > 1 ? " x " + std::to_string(parallel) + " threads" : std::string()) +
                     " needs at least ~" + gib(need) + " (input alone " + gib(input) + "); this machine has " +
                     gib(static_cast<double>(free)) + " memory available");
}

// Refuse an --output that cannot be written, before any work: its folder must take a new file.
inline void check_output(const std::string& path) {
  if (path.empty()) return;
  const std::string probe = path + ".write-test";
  std::ofstream f(probe, std::ios::binary);
  if (!f) fail(kUsage, "--output " + path + ": cannot write there (" + std::strerror(errno) + ")");
  f.close();
  std::remove(probe.c_str());
}

// Write `values` to `path` through a temporary file and a rename: a failure never leaves half a file.
inline void write_output(const std::string& path, const std::vector<float>& values) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
    if (!f) {
      std::remove(tmp.c_str());
      fail(kFailure, "cannot write " + path);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail(kFailure, "cannot write " + path + ": " + std::strerror(errno));
  }
}

inline void print_top5(const std::vector<float>& logits, int64_t batch, int64_t first_sample = 0) {
  const int64_t classes = static_cast<int64_t>(logits.size()) / batch;
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = logits.data() + b * classes;
    std::vector<int> idx(static_cast<size_t>(classes));
    std::iota(idx.begin(), idx.end(), 0);
    const int k = static_cast<int>(std::min<int64_t>(5, classes));
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [row](int a, int c) { return row[a] > row[c]; });
    std::printf("sample %lld top-%d:", static_cast<long long>(first_sample + b), k);
    for (int i = 0; i < k; ++i) std::printf(" %d (%.4f)", idx[i], row[idx[i]]);
    std::printf("\n");
  }
}

// The samples' common body: infer on `input` (K batches with --parallel K; each of K threads its own
// batch, R times, every repeat compared with the first), print top-5, write --output.
inline int run(Model& model, const Options& o, const std::vector<float>& input) {
  const int64_t per = o.shape.volume();
  std::vector<std::vector<float>> results(static_cast<size_t>(o.parallel));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(o.parallel));
  std::vector<double> ms;  // per inference, thread 0
  auto work = [&](int k) {
    try {
      std::vector<float> x(input.begin() + k * per, input.begin() + (k + 1) * per);
      for (int r = 0; r < o.repeat; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<float> y = model.infer(x, o.shape);
        if (k == 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        if (r == 0) {
          results[static_cast<size_t>(k)] = std::move(y);
        } else if (y != results[static_cast<size_t>(k)]) {
          fail(kFailure, "thread " + std::to_string(k) + ": run " + std::to_string(r) + " gave other logits than run 0");
        }
      }
    } catch (...) {
      errors[static_cast<size_t>(k)] = std::current_exception();  // rethrown below, with its exit code
    }
  };
  if (o.parallel == 1) {
    work(0);
  } else {
    std::vector<std::thread> threads;
    for (int k = 0; k < o.parallel; ++k) threads.emplace_back(work, k);
    for (auto& t : threads) t.join();
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  if (o.repeat > 1) {  // the first run compiles for this shape: left out of the median
    std::vector<double> steady(ms.begin() + 1, ms.end());
    std::sort(steady.begin(), steady.end());
    std::fprintf(stderr, "latency (thread 0, %d parallel): first %.3f ms, then median %.3f ms, min %.3f ms over %zu runs\n",
                 o.parallel, ms[0], steady[steady.size() / 2], steady[0], steady.size());
  }
  std::vector<float> all;
  for (const auto& r : results) all.insert(all.end(), r.begin(), r.end());
  print_top5(all, o.shape.n * o.parallel);
  if (!o.output.empty()) write_output(o.output, all);
  return 0;
}

// main() of a sample: `open` builds the model from the options; every error is one line on stderr.
template <typename Open>
int sample_main(int argc, char** argv, const std::vector<std::string>& extra, const std::string& usage, Open open) {
  try {
    Options o = parse_options(argc, argv, extra, usage);
    check_output(o.output);  // before any work: the output, the memory, the input, then the model
    check_fits(o.shape, o.parallel);
    const std::vector<float> input = read_input(o.input, o.shape.volume() * o.parallel);
    auto model = open(o);
    std::cerr << model->describe() << "\n" << "preprocessing: " << model->preprocessing().str() << "\n";
    return run(*model, o, input);
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return e.code;
  } catch (const std::exception& e) {
    std::string line = e.what();
    line = line.substr(0, line.find('\n'));
    std::cerr << "error: " << line << "\n";
    return kFailure;
  }
}

}  // namespace convmlp
