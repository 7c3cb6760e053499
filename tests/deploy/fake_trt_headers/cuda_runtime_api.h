// FAKE CUDA runtime header for tests/deploy/test_trt_cpp.py -- NOT NVIDIA's cuda_runtime_api.h.
// The few runtime calls deploy/cpp/main.cpp makes, with CUDA's signatures, done on the host.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>

struct CUstream_st {};
typedef struct CUstream_st* cudaStream_t;

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};

inline const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "fake CUDA error";
}
inline cudaError_t cudaStreamCreate(cudaStream_t* pStream) {
  *pStream = new CUstream_st;
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t stream) { return stream ? cudaSuccess : cudaErrorInvalidValue; }
inline cudaError_t cudaMalloc(void** devPtr, size_t size) {
  *devPtr = std::calloc(size, 1);
  return *devPtr ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void* devPtr) {
  std::free(devPtr);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                                   cudaStream_t stream = 0) {
  (void)kind;
  (void)stream;
  std::memcpy(dst, src, count);
  return cudaSuccess;
}
