// LibTorch's own gradient kernels for a convolution and a training-mode BatchNorm — what PyTorch's
// autograd calls — for src/ops/libtorch.rs: tch's generated bindings leave them out (their output
// masks have no C type there). Errors come back as a message the caller frees with free().

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstring>
#include <exception>

using tensor = at::Tensor *;

namespace {

template <typename F> char *guard(F f) {
  try {
    f();
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

} // namespace

extern "C" {

char *barlow_conv2d_backward(tensor grad_output, tensor input, tensor weight, const int64_t *stride,
                             const int64_t *padding, const int64_t *dilation, int64_t groups,
                             int input_grad, int weight_grad, tensor *out_input,
                             tensor *out_weight) {
  return guard([&] {
    const int64_t no_output_padding[2] = {0, 0};
    auto grads = at::convolution_backward(
        *grad_output, *input, *weight, std::nullopt, at::IntArrayRef(stride, 2),
        at::IntArrayRef(padding, 2), at::IntArrayRef(dilation, 2), /*transposed=*/false,
        at::IntArrayRef(no_output_padding, 2), groups, {input_grad != 0, weight_grad != 0, false});
    if (input_grad)
      *out_input = new at::Tensor(std::get<0>(grads));
    if (weight_grad)
      *out_weight = new at::Tensor(std::get<1>(grads));
  });
}

char *barlow_batch_norm_backward(tensor grad_output, tensor input, tensor weight, tensor mean,
                                 tensor invstd, double epsilon, tensor *out_input,
                                 tensor *out_weight, tensor *out_bias) {
  return guard([&] {
    auto grads = at::native_batch_norm_backward(*grad_output, *input, *weight, std::nullopt,
                                                std::nullopt, *mean, *invstd, /*train=*/true,
                                                epsilon, {true, true, true});
    *out_input = new at::Tensor(std::get<0>(grads));
    *out_weight = new at::Tensor(std::get<1>(grads));
    *out_bias = new at::Tensor(std::get<2>(grads));
  });
}

// a + alpha·b in one kernel (tch's add has no alpha): the official LARS's `p.add_(mu, alpha=-lr)`.
char *barlow_add_scaled(tensor a, tensor b, double alpha, tensor *out) {
  return guard([&] { *out = new at::Tensor(at::add(*a, *b, alpha)); });
}

// One copy that casts and re-lays out (none where `x` is already both); `dtype`: 0 f64, 1 f32,
// 2 f16, 3 bf16.
char *barlow_channels_last(tensor x, int dtype, tensor *out) {
  return guard([&] {
    const at::ScalarType types[] = {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16};
    TORCH_CHECK(dtype >= 0 && dtype < 4, "no float type ", dtype);
    auto options = x->options().dtype(types[dtype]);
    *out = new at::Tensor(x->to(options, false, false, at::MemoryFormat::ChannelsLast));
  });
}

// Four-dimensional f32 `values` on `like`'s device, in one copy. To a GPU through pinned memory and
// without waiting: from pageable memory LibTorch's copy first waits for the GPU to finish its queue.
// The pinned block is not reused before the transfer ends (LibTorch's host allocator records it).
char *barlow_upload(tensor like, const float *values, const int64_t *shape, tensor *out) {
  return guard([&] {
    auto sizes = at::IntArrayRef(shape, 4);
    auto f32 = at::TensorOptions().dtype(at::kFloat);
    auto host = at::from_blob(const_cast<float *>(values), sizes, f32);
    if (like->is_cuda()) {
      auto pinned = at::empty(sizes, f32.pinned_memory(true));
      pinned.copy_(host);
      *out = new at::Tensor(pinned.to(like->device(), at::kFloat, /*non_blocking=*/true));
    } else {
      *out = new at::Tensor(host.to(like->device(), at::kFloat, false, /*copy=*/true));
    }
  });
}

// f32 means f32: LibTorch multiplies f32 on tensor cores in TF32 by default in cuDNN.
char *barlow_allow_tf32(int allow) {
  return guard([&] {
    at::globalContext().setAllowTF32CuDNN(allow != 0);
    at::globalContext().setAllowTF32CuBLAS(allow != 0);
  });
}

// PyTorch's profiler (Kineto) around some steps, its trace saved where Chrome's trace viewer and
// scripts/trace_summary.py read it: the same record torch.profiler makes of PyTorch's own step.
char *barlow_profiler_start(int cuda) {
  return guard([&] {
    namespace impl = torch::profiler::impl;
    impl::ProfilerConfig config(impl::ProfilerState::KINETO, /*report_input_shapes=*/true);
    std::set<impl::ActivityType> activities{impl::ActivityType::CPU};
    if (cuda)
      activities.insert(impl::ActivityType::CUDA);
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
  });
}

char *barlow_profiler_stop(const char *path) {
  return guard([&] { torch::autograd::profiler::disableProfiler()->save(path); });
}

} // extern "C"
