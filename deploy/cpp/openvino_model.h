// The OpenVINO backend of convmlp.h: the ONNX graphs and IRs (.xml + .bin) `convmlp-deploy export`
// writes, on OpenVINO's CPU plugin, as deploy/runners/openvino.py runs them in Python:
//
// - one compiled model per input shape (a static shape runs faster than the dynamic model), the most
//   recent kMaxCompiled kept;
// - precision f32 or bf16 as asked (INFERENCE_PRECISION_HINT; "" = OpenVINO's default), read back from
//   the compiled model and reported; bf16 on a CPU without it is refused, never a silent fallback;
// - infer() from many threads at once: each call takes an infer request of its own from a pool per
//   compiled model, so one model serves many threads;
// - preprocessing (mean/std/crop) from the model's metadata: rt_info "convmlp_deploy" of an IR, or the
//   ONNX metadata_props, which OpenVINO's ONNX frontend puts under rt_info "framework".
#pragma once

#include <openvino/frontend/manager.hpp>
#include <openvino/openvino.hpp>

#include <filesystem>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "convmlp.h"

namespace convmlp {

class OpenVINOModel : public Model {
 public:
  static constexpr size_t kMaxCompiled = 8;

  // `precision`: "f32", "bf16" or "" (OpenVINO's default); `threads`: 0 = OpenVINO's choice.
  OpenVINOModel(const std::string& path, const std::string& precision, int threads)
      : path_(path), precision_(precision), threads_(threads) {
    namespace fs = std::filesystem;
    const std::string ext = fs::path(path).extension().string();
    if (ext != ".onnx" && ext != ".xml")
      fail(kUsage, path + ": give an ONNX graph (.onnx) or an OpenVINO IR (.xml with its .bin)");
    if (!fs::is_regular_file(path)) fail(kFailure, "model not found: " + path);
    if (ext == ".xml") {
      const fs::path bin = fs::path(path).replace_extension(".bin");
      if (!fs::is_regular_file(bin))
        fail(kFailure, path + ": its weights file " + bin.filename().string() +
                           " is missing (an IR is the .xml and the .bin together)");
    }
    if (precision_ == "bf16") {
      auto caps = core_.get_property("CPU", ov::device::capabilities);
      if (std::find(caps.begin(), caps.end(), "BF16") == caps.end())
        fail(kUsage, "--precision bf16: this CPU has no native BF16 for OpenVINO; use f32");
    }
    try {
      model_ = ext == ".onnx" ? read_onnx(path) : core_.read_model(path);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      fail(kFailure, path + ": OpenVINO cannot read it (" + first_line(e.what()) + ")");
    }
    if (model_->inputs().size() != 1 || model_->outputs().size() != 1)
      fail(kUsage, path + ": a ConvMLP classifier has one input and one output (a features model has f1..f4)");
    input_name_ = model_->input().get_any_name();
    // compile once now, so that a bad graph or precision fails here and the precision used is known
    auto first = acquire(nullptr);
    used_ = first.first->model.get_property(ov::hint::inference_precision).get_type_name();
    give_back(*first.first, std::move(first.second));
  }

  std::vector<float> infer(const std::vector<float>& input, const Shape& shape) override {
    auto [compiled, request] = acquire(&shape);
    Compiled& c = *compiled;
    std::vector<float> logits;
    try {
      ov::Tensor x(ov::element::f32, ov::Shape{static_cast<size_t>(shape.n), static_cast<size_t>(shape.c),
                                               static_cast<size_t>(shape.h), static_cast<size_t>(shape.w)},
                   const_cast<float*>(input.data()));
      request.set_input_tensor(x);
      request.infer();
      const ov::Tensor y = request.get_output_tensor();
      const float* p = y.data<const float>();
      logits.assign(p, p + y.get_size());
    } catch (const std::exception& e) {
      give_back(c, std::move(request));
      fail(kFailure, "OpenVINO failed on input " + shape.str() + " (" + first_line(e.what()) + ")");
    }
    give_back(c, std::move(request));
    return logits;
  }

  Preprocessing preprocessing() const override {
    return preprocessing_from([this](const std::string& key) { return metadata(key); });
  }

  std::string describe() const override {
    return path_ + " on OpenVINO " + std::string(ov::get_openvino_version().buildNumber) + " [CPU, " + used_ +
           "]" + (precision_.empty() ? " (precision: OpenVINO's default)" : "");
  }

  // What OpenVINO compiled with: "f32", "bf16"...
  const std::string& precision_used() const { return used_; }

 private:
  struct Compiled {
    std::vector<int64_t> key;  // N, C, H, W; empty for the dynamic model
    ov::CompiledModel model;
    std::vector<ov::InferRequest> idle;
  };

  // The ONNX frontend alone: core.read_model would also probe the other frontends, whose own loggers
  // print to stderr about a file that is not theirs.
  static std::shared_ptr<ov::Model> read_onnx(const std::string& path) {
    ov::frontend::FrontEndManager manager;
    ov::frontend::FrontEnd::Ptr onnx = manager.load_by_framework("onnx");
    if (!onnx || !onnx->supported(path)) fail(kFailure, path + ": not a readable ONNX model");
    return onnx->convert(onnx->load(path));
  }

  static std::string first_line(const std::string& text) {
    // OpenVINO's messages open with "Exception from src/..." and "Check '...'" framing lines
    std::istringstream in(text);
    std::string line, kept;
    while (std::getline(in, line))
      if (!line.empty() && line.rfind("Exception from", 0) != 0 && line.rfind("Check '", 0) != 0) {
        kept = line;
        break;
      }
    return kept.empty() ? text.substr(0, text.find('\n')) : kept;
  }

  std::string metadata(const std::string& key) const {
    for (const char* section : {"convmlp_deploy", "framework"}) {
      try {
        if (model_->has_rt_info(section, key)) return model_->get_rt_info<std::string>(section, key);
      } catch (const std::exception&) {
      }
    }
    return "";
  }

  ov::AnyMap config() const {
    ov::AnyMap cfg{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY)};
    if (precision_ == "f32") cfg.emplace(ov::hint::inference_precision(ov::element::f32));
    if (precision_ == "bf16") cfg.emplace(ov::hint::inference_precision(ov::element::bf16));
    if (threads_ > 0) cfg.emplace(ov::inference_num_threads(threads_));
    return cfg;
  }

  // The compiled model for `shape` (nullptr: the dynamic one), compiled on first use, and an infer
  // request of its own for the caller, under one lock. The most recent kMaxCompiled shapes are kept;
  // older ones are dropped only while no request is in flight (a list node never moves, so the
  // pointer returned stays valid until give_back).
  std::pair<Compiled*, ov::InferRequest> acquire(const Shape* shape) {
    std::vector<int64_t> key;
    if (shape) key = {shape->n, shape->c, shape->h, shape->w};
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = std::find_if(compiled_.begin(), compiled_.end(), [&](const Compiled& c) { return c.key == key; });
    if (found != compiled_.end()) {
      compiled_.splice(compiled_.begin(), compiled_, found);  // most recently used first
    } else {
      std::shared_ptr<ov::Model> m = model_;
      if (shape) {
        m = model_->clone();
        m->reshape({{input_name_, ov::PartialShape{shape->n, shape->c, shape->h, shape->w}}});
      }
      try {
        compiled_.push_front(Compiled{key, core_.compile_model(m, "CPU", config()), {}});
      } catch (const std::exception& e) {
        fail(kFailure, path_ + ": OpenVINO cannot compile it for " + (shape ? shape->str() : "dynamic shapes") +
                           " (" + first_line(e.what()) + ")");
      }
      while (busy_ == 0 && compiled_.size() > kMaxCompiled) compiled_.pop_back();
    }
    Compiled& c = compiled_.front();
    ++busy_;
    if (!c.idle.empty()) {
      ov::InferRequest r = std::move(c.idle.back());
      c.idle.pop_back();
      return {&c, std::move(r)};
    }
    return {&c, c.model.create_infer_request()};
  }

  void give_back(Compiled& c, ov::InferRequest r) {
    std::lock_guard<std::mutex> lock(mutex_);
    --busy_;
    c.idle.push_back(std::move(r));
  }

  std::string path_, precision_, input_name_, used_;
  int threads_ = 0;
  ov::Core core_;
  std::shared_ptr<ov::Model> model_;
  std::mutex mutex_;
  std::list<Compiled> compiled_;
  int busy_ = 0;
};

}  // namespace convmlp
