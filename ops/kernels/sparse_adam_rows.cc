// Adam on some rows of a table and of its two slots, in place, in one multi-threaded pass.
//
// A table pinned to the host (--embedding_device=cpu) is updated on its U distinct looked-up
// rows every step. With TensorFlow's own kernels that is three gathers, the rule and three
// scatters: seven passes over [U, E] in memory. Here each row of the table, m and v is read
// once and written once, in place, with the rows shared among TensorFlow's intra-op threads.
//
// The rule is `ops.optim.adam_update` in ResourceApplyAdam's arithmetic:
//
//   m' = b1 m + (1 - b1) g,   v' = b2 v + (1 - b2) g^2
//   param' = param - alpha m' / (sqrt(v') + eps sqrt(1 - b2^t)),
//   alpha = lr sqrt(1 - b2^t) / (1 - b1^t)
//
// which is the same value up to rounding in T: one square root and one division an element.
// The gradient may come in a narrower type G (bfloat16 from a bf16 step), converted to T as
// each element is read: no separate pass to cast it.
// Every coefficient comes in as a scalar of T, 1 - b1 and 1 - b2 computed by the caller: the
// rule rounds them from Python's doubles, and 1 - T(b2) is off by 1.3e-5 relative in float32
// for b2 = 0.999.
#define EIGEN_USE_THREADS

#include <cmath>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/kernels/training_op_helpers.h"
#include "tensorflow/core/util/work_sharder.h"

namespace seq2seq {
namespace {

using ::tensorflow::CPUDevice;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::errors::InvalidArgument;

REGISTER_OP("Seq2seqSparseAdamRows")
    .Input("var: resource")
    .Input("m: resource")
    .Input("v: resource")
    .Input("rows: int32")
    .Input("grad: G")
    .Input("lr: T")
    .Input("step: T")
    .Input("beta1: T")
    .Input("beta2: T")
    .Input("one_minus_beta1: T")
    .Input("one_minus_beta2: T")
    .Input("epsilon: T")
    .Attr("T: {float, double}")
    .Attr("G: {float, double, bfloat16}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext*) {
      return absl::OkStatus();
    })
    .Doc("Adam on rows `rows` [U] (distinct) of var, m and v ([V, E]) with grad [U, E].");

// One row: p, m, v and g each [width]; the rows of different calls never overlap.
template <typename T, typename G>
void AdamRow(T* __restrict__ p, T* __restrict__ m, T* __restrict__ v,
             const G* __restrict__ g, int64_t width, T b1, T c1, T b2, T c2, T alpha,
             T eps_hat) {
  for (int64_t j = 0; j < width; ++j) {
    const T gj = static_cast<T>(g[j]);
    const T new_m = b1 * m[j] + c1 * gj;
    const T new_v = b2 * v[j] + c2 * (gj * gj);
    p[j] -= alpha * new_m / (std::sqrt(new_v) + eps_hat);
    m[j] = new_m;
    v[j] = new_v;
  }
}

template <typename T, typename G>
class SparseAdamRowsOp : public OpKernel {
 public:
  explicit SparseAdamRowsOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    // Shared locks, as TensorFlow's sparse apply ops take them without use_locking; each
    // buffer made the variable's own first (copy-on-read), so the writes land in place.
    auto locks = ::tensorflow::MaybeLockVariableInputMutexesInOrder<CPUDevice, T>(
        context, /*do_lock=*/false, /*sparse=*/true, {0, 1, 2});
    Tensor var, m, v;
    for (auto [input, tensor] : {std::pair{0, &var}, {1, &m}, {2, &v}}) {
      OP_REQUIRES_OK(context, ::tensorflow::GetInputTensorFromVariable<CPUDevice, T>(
                                  context, input, /*lock_held=*/true, /*sparse=*/true,
                                  tensor));
    }
    const Tensor& rows = context->input(3);
    const Tensor& grad = context->input(4);
    OP_REQUIRES_OK(context, CheckShapes(var, m, v, rows, grad));
    OP_REQUIRES_OK(context, CheckRows(rows, var.dim_size(0)));
    const int64_t width = var.dim_size(1);
    T lr, step, b1, b2, c1, c2, epsilon;
    int input = 5;
    for (T* scalar : {&lr, &step, &b1, &b2, &c1, &c2, &epsilon}) {
      const Tensor& value = context->input(input++);
      OP_REQUIRES(context, value.NumElements() == 1,
                  InvalidArgument("input ", input - 1, " must be a scalar"));
      *scalar = value.flat<T>()(0);
    }
    const T root = std::sqrt(T(1) - std::pow(b2, step));
    const T alpha = lr * root / (T(1) - std::pow(b1, step));
    const T eps_hat = epsilon * root;
    T* param_data = var.flat<T>().data();
    T* m_data = m.flat<T>().data();
    T* v_data = v.flat<T>().data();
    const G* grad_data = grad.flat<G>().data();
    auto ids = rows.flat<int32_t>();
    auto update = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t at = static_cast<int64_t>(ids(i)) * width;
        AdamRow<T, G>(param_data + at, m_data + at, v_data + at, grad_data + i * width,
                      width, b1, c1, b2, c2, alpha, eps_hat);
      }
    };
    auto* threads = context->device()->tensorflow_cpu_worker_threads();
    // About a dozen flops and 7 loads or stores an element.
    ::tensorflow::Shard(threads->num_threads, threads->workers, ids.size(), width * 30,
                        update);
  }

 private:
  static absl::Status CheckShapes(const Tensor& var, const Tensor& m, const Tensor& v,
                                  const Tensor& rows, const Tensor& grad) {
    if (var.dims() != 2 || m.shape() != var.shape() || v.shape() != var.shape()) {
      return InvalidArgument("var, m and v must be one [V, E] shape, got ",
                             var.shape().DebugString(), ", ", m.shape().DebugString(), ", ",
                             v.shape().DebugString());
    }
    if (rows.dims() != 1 || grad.dims() != 2 || grad.dim_size(0) != rows.dim_size(0) ||
        grad.dim_size(1) != var.dim_size(1)) {
      return InvalidArgument("rows must be [U] and grad [U, E] for a table of ",
                             var.shape().DebugString(), ", got rows ",
                             rows.shape().DebugString(), " and grad ",
                             grad.shape().DebugString());
    }
    return absl::OkStatus();
  }

  // Every id in [0, vocab) and none twice: the threads write each row once.
  static absl::Status CheckRows(const Tensor& rows, int64_t vocab) {
    auto ids = rows.flat<int32_t>();
    std::vector<bool> seen(vocab, false);
    for (int64_t i = 0; i < ids.size(); ++i) {
      const int32_t id = ids(i);
      if (id < 0 || id >= vocab) {
        return InvalidArgument("row ", id, " is outside the table's ", vocab, " rows");
      }
      if (seen[id]) return InvalidArgument("row ", id, " is given twice; rows must be distinct");
      seen[id] = true;
    }
    return absl::OkStatus();
  }
};

#define REGISTER(T, G)                                                        \
  REGISTER_KERNEL_BUILDER(Name("Seq2seqSparseAdamRows")                       \
                              .Device(::tensorflow::DEVICE_CPU)               \
                              .TypeConstraint<T>("T")                         \
                              .TypeConstraint<G>("G"),                        \
                          SparseAdamRowsOp<T, G>)
REGISTER(float, float);
REGISTER(float, ::tensorflow::bfloat16);
REGISTER(double, double);
#undef REGISTER

}  // namespace
}  // namespace seq2seq
