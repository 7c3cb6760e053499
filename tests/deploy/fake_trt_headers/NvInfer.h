// FAKE TensorRT header for tests/deploy/test_trt_cpp.py -- NOT NVIDIA's NvInfer.h.
//
// It declares, with the signatures of TensorRT 10.8 / 11.1 (include/NvInferRuntime.h,
// NvInferRuntimeBase.h, NvInferLegacyDims.h, NvInferVersion.h), only the API that deploy/cpp/tensorrt_model.h
// calls, and
// implements it with a CPU fake so that the sample's own logic (arguments, sidecar, host-code
// decision, profile choice, top-5) can be compiled, run and checked without TensorRT. Compiling
// against it proves nothing about NVIDIA's headers beyond the signatures transcribed here.
//
// A fake plan is a text file: "FAKEPLAN host_code=<0|1> min=NxCxHxW max=NxCxHxW" (one profile).
// The engine has input "input" [N,3,H,W] and output "logits" [N,10]; logits[b][k] = input[b][k]
// (the first 10 values of each sample). Deserialization reports the host-code setting on stderr.
#pragma once

#include <cuda_runtime_api.h>

#define NV_TENSORRT_MAJOR 10  // NvInferVersion.h
#define NV_TENSORRT_MINOR 8

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace nvinfer1 {

using AsciiChar = char;

class Dims {
 public:
  static constexpr int32_t MAX_DIMS{8};
  int32_t nbDims;
  int64_t d[MAX_DIMS];
};

class Dims4 : public Dims {
 public:
  Dims4() : Dims4(0, 0, 0, 0) {}
  Dims4(int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    nbDims = 4;
    d[0] = d0;
    d[1] = d1;
    d[2] = d2;
    d[3] = d3;
  }
};

enum class DataType : int32_t { kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3, kBOOL = 4, kUINT8 = 5, kBF16 = 7, kINT64 = 8 };
enum class TensorIOMode : int32_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };
enum class OptProfileSelector : int32_t { kMIN = 0, kOPT = 1, kMAX = 2 };
enum class ExecutionContextAllocationStrategy : int32_t { kSTATIC = 0, kON_PROFILE_CHANGE = 1, kUSER_MANAGED = 2 };

class ILogger {
 public:
  enum class Severity : int32_t { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
  virtual void log(Severity severity, AsciiChar const* msg) noexcept = 0;
  ILogger() = default;
  virtual ~ILogger() noexcept = default;
};

namespace fake {
constexpr int64_t kClasses = 10;
inline bool parse_dims(const char* text, Dims4* out) {
  long long v[4];
  if (std::sscanf(text, "%lldx%lldx%lldx%lld", &v[0], &v[1], &v[2], &v[3]) != 4) return false;
  *out = Dims4(v[0], v[1], v[2], v[3]);
  return true;
}
}  // namespace fake

class ICudaEngine;

class IExecutionContext {
 public:
  explicit IExecutionContext(Dims4 lo, Dims4 hi) : lo_(lo), hi_(hi) {}
  virtual ~IExecutionContext() noexcept = default;

  bool setOptimizationProfileAsync(int32_t profileIndex, cudaStream_t stream) noexcept {
    (void)stream;
    return profileIndex == 0;
  }
  bool setInputShape(char const* tensorName, Dims const& dims) noexcept {
    if (std::strcmp(tensorName, "input") != 0 || dims.nbDims != 4) return false;
    for (int i = 0; i < 4; ++i)
      if (dims.d[i] < lo_.d[i] || dims.d[i] > hi_.d[i]) return false;
    shape_ = Dims4(dims.d[0], dims.d[1], dims.d[2], dims.d[3]);
    return true;
  }
  Dims getTensorShape(char const* tensorName) const noexcept {
    if (std::strcmp(tensorName, "input") == 0) return shape_;
    Dims out{};
    out.nbDims = 2;
    out.d[0] = shape_.d[0];
    out.d[1] = fake::kClasses;
    return out;
  }
  bool setTensorAddress(char const* tensorName, void* data) noexcept {
    if (std::strcmp(tensorName, "input") == 0) {
      input_ = static_cast<float*>(data);
    } else if (std::strcmp(tensorName, "logits") == 0) {
      output_ = static_cast<float*>(data);
    } else {
      return false;
    }
    return true;
  }
  bool enqueueV3(cudaStream_t stream) noexcept {
    (void)stream;
    if (!input_ || !output_ || shape_.d[0] == 0) return false;
    const int64_t sample = shape_.d[1] * shape_.d[2] * shape_.d[3];
    for (int64_t b = 0; b < shape_.d[0]; ++b)
      for (int64_t k = 0; k < fake::kClasses; ++k) output_[b * fake::kClasses + k] = input_[b * sample + k];
    return true;
  }

 private:
  Dims4 lo_, hi_, shape_;
  float* input_ = nullptr;
  float* output_ = nullptr;
};

class ICudaEngine {
 public:
  ICudaEngine(Dims4 lo, Dims4 hi) : lo_(lo), hi_(hi) {}
  virtual ~ICudaEngine() noexcept = default;

  TensorIOMode getTensorIOMode(char const* tensorName) const noexcept {
    if (std::strcmp(tensorName, "input") == 0) return TensorIOMode::kINPUT;
    if (std::strcmp(tensorName, "logits") == 0) return TensorIOMode::kOUTPUT;
    return TensorIOMode::kNONE;
  }
  DataType getTensorDataType(char const* tensorName) const noexcept {
    (void)tensorName;
    return DataType::kFLOAT;
  }
  int32_t getNbOptimizationProfiles() const noexcept { return 1; }
  Dims getProfileShape(char const* tensorName, int32_t profileIndex, OptProfileSelector select) const noexcept {
    (void)tensorName;
    (void)profileIndex;
    return select == OptProfileSelector::kMAX ? hi_ : lo_;
  }
  IExecutionContext* createExecutionContext(
      ExecutionContextAllocationStrategy strategy = ExecutionContextAllocationStrategy::kSTATIC) noexcept {
    (void)strategy;
    return new IExecutionContext(lo_, hi_);
  }

 private:
  Dims4 lo_, hi_;
};

class IRuntime {
 public:
  explicit IRuntime(ILogger& logger) : logger_(logger) {}
  virtual ~IRuntime() noexcept = default;

  void setEngineHostCodeAllowed(bool allowed) noexcept { host_code_allowed_ = allowed; }
  bool getEngineHostCodeAllowed() const noexcept { return host_code_allowed_; }

  ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept {
    std::fprintf(stderr, "fake-tensorrt: deserialize with host code allowed=%d\n", host_code_allowed_ ? 1 : 0);
    const std::string text(static_cast<const char*>(blob), size);
    char lo[64] = {0}, hi[64] = {0};
    int host_code = 0;
    Dims4 min, max;
    if (std::sscanf(text.c_str(), "FAKEPLAN host_code=%d min=%63s max=%63s", &host_code, lo, hi) != 3 ||
        !fake::parse_dims(lo, &min) || !fake::parse_dims(hi, &max)) {
      logger_.log(ILogger::Severity::kERROR, "fake: not a plan");
      return nullptr;
    }
    if (host_code && !host_code_allowed_) {
      logger_.log(ILogger::Severity::kERROR, "fake: the plan contains host code, which this runtime does not allow");
      return nullptr;
    }
    return new ICudaEngine(min, max);
  }

 private:
  ILogger& logger_;
  bool host_code_allowed_ = false;  // "The default value is false."
};

inline IRuntime* createInferRuntime(ILogger& logger) noexcept { return new IRuntime(logger); }

}  // namespace nvinfer1
