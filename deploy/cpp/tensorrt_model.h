// The TensorRT backend of convmlp.h: a plan written by `convmlp-deploy build` (a plain TensorRT plan with
// a .json sidecar), run through the name-based dynamic-shape flow of TensorRT 10/11: the covering
// optimization profile, setInputShape, setTensorAddress, enqueueV3 on a CUDA stream.
//
// Tensor names (kInputName, kOutputName) are the I/O contract of convmlp/spec.py. One execution
// context: infer() calls from several threads are serialized by a lock (a context per thread is how
// to scale; deploy/runners/tensorrt.py does that in Python).
//
// Host code: a plan built with --version-compatible embeds TensorRT's lean runtime, which is host code
// run at deserialization; TensorRT refuses it unless setEngineHostCodeAllowed(true) was called. It is
// allowed only when the plan's sidecar says "version_compatible": true, or when the caller asks
// (--allow-host-code, for a version-compatible plan without sidecar). Only for plans you trust.
#pragma once

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "convmlp.h"
#include "sidecar.h"

namespace convmlp {

constexpr const char* kInputName = "input";
constexpr const char* kOutputName = "logits";

class TensorRTModel : public Model {
 public:
  TensorRTModel(const std::string& path, bool allow_host_code) : path_(path) {
    const std::string side_path = sidecar_path(path);
    side_ = read_sidecar(side_path);
    if (side_.status == SidecarStatus::kInvalid)
      fail(kFailure, "cannot read the sidecar " + side_path + ": " + side_.detail + " (fix or delete it)");
    if (side_.status == SidecarStatus::kVersionCompatible) allow_host_code = true;
    allow_host_code_ = allow_host_code;

    std::vector<char> plan = read_file(path);
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) fail(kFailure, "cannot create the TensorRT runtime");
    if (allow_host_code) runtime_->setEngineHostCodeAllowed(true);  // the lean runtime embedded in the plan
    engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine_) {
      std::string why = "TensorRT cannot load the plan (built on another GPU or TensorRT version?)";
      if (!allow_host_code)
        why += "; a version-compatible plan embeds host code: it loads with its .json sidecar or with "
               "--allow-host-code (only for plans you trust)";
      fail(kFailure, why);
    }
    if (engine_->getTensorIOMode(kInputName) != nvinfer1::TensorIOMode::kINPUT ||
        engine_->getTensorIOMode(kOutputName) != nvinfer1::TensorIOMode::kOUTPUT)
      fail(kUsage, std::string("engine lacks input '") + kInputName + "' / output '" + kOutputName +
                       "' (a features engine has outputs f1..f4; this sample prints classes)");
    if (engine_->getTensorDataType(kInputName) != nvinfer1::DataType::kFLOAT ||
        engine_->getTensorDataType(kOutputName) != nvinfer1::DataType::kFLOAT)
      fail(kFailure, "expected float32 input and output tensors");
    context_.reset(engine_->createExecutionContext());
    if (!context_) fail(kFailure, "cannot create an execution context");
    check(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }

  ~TensorRTModel() override {
    if (d_input_) cudaFree(d_input_);
    if (d_output_) cudaFree(d_output_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::vector<float> infer(const std::vector<float>& input, const Shape& shape) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const nvinfer1::Dims4 dims{shape.n, shape.c, shape.h, shape.w};
    int profile = -1;
    for (int p = 0; p < engine_->getNbOptimizationProfiles() && profile < 0; ++p)
      if (covers(p, dims)) profile = p;
    if (profile < 0) fail(kUsage, "input " + shape.str() + " is outside every optimization profile of this engine");
    if (profile != profile_) {
      if (!context_->setOptimizationProfileAsync(profile, stream_)) fail(kFailure, "cannot select the optimization profile");
      profile_ = profile;
    }
    if (!context_->setInputShape(kInputName, dims)) fail(kFailure, "TensorRT refused the input shape " + shape.str());
    const nvinfer1::Dims out_shape = context_->getTensorShape(kOutputName);
    int64_t out_count = 1;
    for (int i = 0; i < out_shape.nbDims; ++i) out_count *= out_shape.d[i];
    reserve(&d_input_, &input_bytes_, input.size() * sizeof(float));
    reserve(&d_output_, &output_bytes_, static_cast<size_t>(out_count) * sizeof(float));
    if (!context_->setTensorAddress(kInputName, d_input_) || !context_->setTensorAddress(kOutputName, d_output_))
      fail(kFailure, "TensorRT refused a tensor address");
    check(cudaMemcpyAsync(d_input_, input.data(), input.size() * sizeof(float), cudaMemcpyHostToDevice, stream_),
          "cudaMemcpyAsync");
    if (!context_->enqueueV3(stream_)) fail(kFailure, "enqueueV3 failed");
    std::vector<float> logits(static_cast<size_t>(out_count));
    check(cudaMemcpyAsync(logits.data(), d_output_, logits.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_),
          "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return logits;
  }

  Preprocessing preprocessing() const override {
    return preprocessing_from([this](const std::string& key) {
      auto it = side_.metadata.find(key);
      return it == side_.metadata.end() ? std::string() : it->second;
    });
  }

  std::string describe() const override {
    return path_ + " on TensorRT " + std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) +
           " (precision: the plan's own; host code " + (allow_host_code_ ? "allowed" : "not allowed") + ")";
  }

 private:
  class Logger : public nvinfer1::ILogger {
   public:
    void log(Severity severity, const char* msg) noexcept override {
      if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
    }
  };

  static void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) fail(kFailure, std::string("CUDA error: ") + cudaGetErrorString(err) + " at " + what);
  }

  bool covers(int profile, const nvinfer1::Dims& shape) const {
    auto lo = engine_->getProfileShape(kInputName, profile, nvinfer1::OptProfileSelector::kMIN);
    auto hi = engine_->getProfileShape(kInputName, profile, nvinfer1::OptProfileSelector::kMAX);
    for (int i = 0; i < shape.nbDims; ++i)
      if (shape.d[i] < lo.d[i] || shape.d[i] > hi.d[i]) return false;
    return true;
  }

  // A device buffer of at least `bytes`, grown (never shrunk) as shapes change.
  static void reserve(void** buffer, size_t* have, size_t bytes) {
    if (*have >= bytes) return;
    if (*buffer) check(cudaFree(*buffer), "cudaFree");
    *buffer = nullptr;
    check(cudaMalloc(buffer, bytes), "cudaMalloc");
    *have = bytes;
  }

  std::string path_;
  Sidecar side_;
  bool allow_host_code_ = false;
  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  cudaStream_t stream_ = nullptr;
  void* d_input_ = nullptr;
  void* d_output_ = nullptr;
  size_t input_bytes_ = 0, output_bytes_ = 0;
  int profile_ = -1;
  std::mutex mutex_;
};

}  // namespace convmlp
