// convmlp_trt: run a TensorRT plan built by `convmlp-deploy build` on one dynamic-shape batch.
//
//   ./convmlp_trt [--allow-host-code] model.engine N C H W [input.bin]
//
// input.bin (optional): N*C*H*W float32 values, NCHW, already normalised with the model's mean/std.
// Without it the input is a deterministic pattern. Prints the top-5 classes of each sample.
// Tensor names (kInputName, kOutputName) are the I/O contract of convmlp/spec.py.
//
// Host code: a plan built with --version-compatible embeds TensorRT's lean runtime, which is host
// code run at deserialization; TensorRT refuses it unless setEngineHostCodeAllowed(true) was called.
// The sample allows it only when the plan's sidecar (model.engine.json) says "version_compatible": true,
// or when --allow-host-code is given (a version-compatible plan without sidecar). Only for plans you trust.

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "sidecar.h"

namespace {

constexpr const char* kInputName = "input";
constexpr const char* kOutputName = "logits";

class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
  }
};

#define CHECK_CUDA(call)                                                                   \
  do {                                                                                     \
    cudaError_t err_ = (call);                                                             \
    if (err_ != cudaSuccess) {                                                             \
      std::cerr << "CUDA error: " << cudaGetErrorString(err_) << " at " << #call << "\n"; \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "error: " << message << "\n";
  std::exit(1);
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot open " + path);
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

int64_t volume(const nvinfer1::Dims& d) {
  int64_t v = 1;
  for (int i = 0; i < d.nbDims; ++i) v *= d.d[i];
  return v;
}

bool covers(nvinfer1::ICudaEngine& engine, int profile, const nvinfer1::Dims& shape) {
  auto lo = engine.getProfileShape(kInputName, profile, nvinfer1::OptProfileSelector::kMIN);
  auto hi = engine.getProfileShape(kInputName, profile, nvinfer1::OptProfileSelector::kMAX);
  for (int i = 0; i < shape.nbDims; ++i)
    if (shape.d[i] < lo.d[i] || shape.d[i] > hi.d[i]) return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bool allow_host_code = false;
  if (!args.empty() && args[0] == "--allow-host-code") {
    allow_host_code = true;
    args.erase(args.begin());
  }
  if (args.size() != 5 && args.size() != 6) {
    std::cerr << "usage: " << argv[0] << " [--allow-host-code] model.engine N C H W [input.bin]\n";
    return 2;
  }
  const std::string engine_path = args[0];
  nvinfer1::Dims4 shape{std::atoi(args[1].c_str()), std::atoi(args[2].c_str()), std::atoi(args[3].c_str()),
                        std::atoi(args[4].c_str())};
  if (shape.d[0] < 1 || shape.d[1] != 3 || shape.d[2] < 32 || shape.d[3] < 32)
    fail("shape must be N>=1, C=3, H>=32, W>=32");

  const std::string side_path = convmlp::sidecar_path(engine_path);
  const convmlp::Sidecar side = convmlp::read_sidecar(side_path);
  if (side.status == convmlp::SidecarStatus::kInvalid)
    fail("cannot read the sidecar " + side_path + ": " + side.detail + " (fix or delete it)");
  if (side.status == convmlp::SidecarStatus::kVersionCompatible) allow_host_code = true;

  Logger logger;
  std::vector<char> plan = read_file(engine_path);
  std::unique_ptr<nvinfer1::IRuntime> runtime{nvinfer1::createInferRuntime(logger)};
  if (!runtime) fail("cannot create the TensorRT runtime");
  if (allow_host_code) runtime->setEngineHostCodeAllowed(true);  // the lean runtime embedded in the plan
  std::unique_ptr<nvinfer1::ICudaEngine> engine{runtime->deserializeCudaEngine(plan.data(), plan.size())};
  if (!engine) {
    std::string why = "TensorRT cannot load the plan (built on another GPU or TensorRT version?)";
    if (!allow_host_code)
      why += "; a version-compatible plan embeds host code: it loads with its .json sidecar or with "
             "--allow-host-code (only for plans you trust)";
    fail(why);
  }

  if (engine->getTensorIOMode(kInputName) != nvinfer1::TensorIOMode::kINPUT ||
      engine->getTensorIOMode(kOutputName) != nvinfer1::TensorIOMode::kOUTPUT)
    fail(std::string("engine lacks input '") + kInputName + "' / output '" + kOutputName +
         "' (a features engine has outputs f1..f4; this sample prints classes)");
  if (engine->getTensorDataType(kInputName) != nvinfer1::DataType::kFLOAT ||
      engine->getTensorDataType(kOutputName) != nvinfer1::DataType::kFLOAT)
    fail("expected float32 input and output tensors");

  int profile = -1;
  for (int p = 0; p < engine->getNbOptimizationProfiles() && profile < 0; ++p)
    if (covers(*engine, p, shape)) profile = p;
  if (profile < 0) fail("input shape is outside every optimization profile of this engine");

  std::unique_ptr<nvinfer1::IExecutionContext> context{engine->createExecutionContext()};
  if (!context) fail("cannot create an execution context");
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  if (!context->setOptimizationProfileAsync(profile, stream)) fail("cannot select the optimization profile");
  if (!context->setInputShape(kInputName, shape)) fail("TensorRT refused the input shape");
  nvinfer1::Dims out_shape = context->getTensorShape(kOutputName);
  const int64_t in_count = volume(shape), out_count = volume(out_shape);
  const int64_t batch = shape.d[0], classes = out_count / batch;

  std::vector<float> input(static_cast<size_t>(in_count));
  if (args.size() == 6) {
    std::vector<char> raw = read_file(args[5]);
    if (raw.size() != input.size() * sizeof(float)) fail("input.bin has the wrong size for this shape");
    std::copy(raw.begin(), raw.end(), reinterpret_cast<char*>(input.data()));
  } else {
    for (size_t i = 0; i < input.size(); ++i) input[i] = std::sin(0.001f * static_cast<float>(i));
  }

  void* d_input = nullptr;
  void* d_output = nullptr;
  CHECK_CUDA(cudaMalloc(&d_input, in_count * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&d_output, out_count * sizeof(float)));
  if (!context->setTensorAddress(kInputName, d_input) || !context->setTensorAddress(kOutputName, d_output))
    fail("TensorRT refused a tensor address");

  CHECK_CUDA(cudaMemcpyAsync(d_input, input.data(), in_count * sizeof(float), cudaMemcpyHostToDevice, stream));
  if (!context->enqueueV3(stream)) fail("enqueueV3 failed");
  std::vector<float> logits(static_cast<size_t>(out_count));
  CHECK_CUDA(cudaMemcpyAsync(logits.data(), d_output, out_count * sizeof(float), cudaMemcpyDeviceToHost, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));

  for (int64_t b = 0; b < batch; ++b) {
    const float* row = logits.data() + b * classes;
    std::vector<int> idx(static_cast<size_t>(classes));
    std::iota(idx.begin(), idx.end(), 0);
    const int k = static_cast<int>(std::min<int64_t>(5, classes));
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [row](int a, int c) { return row[a] > row[c]; });
    std::printf("sample %lld top-%d:", static_cast<long long>(b), k);
    for (int i = 0; i < k; ++i) std::printf(" %d (%.4f)", idx[i], row[idx[i]]);
    std::printf("\n");
  }
  CHECK_CUDA(cudaFree(d_input));
  CHECK_CUDA(cudaFree(d_output));
  CHECK_CUDA(cudaStreamDestroy(stream));
  return 0;
}
