//! The CPU kernels: ops with a forward and a backward of their own (f32), the exponential and
//! gemm slices they share, NF4 quantisation and the products with frozen weights. They import
//! nothing of the crate outside this folder; the model reaches them through `fused::applies`.

pub mod fast_exp;
pub mod frozen_matmul;
pub mod fused;
pub mod fused_attention;
pub mod fused_head_logprobs;
pub mod fused_linear;
pub mod fused_logprobs;
pub mod fused_lora;
pub mod fused_repeat_kv;
pub mod fused_rms_norm;
pub mod fused_rope;
pub mod fused_swiglu;
pub mod quant;
pub mod slice_gemm;
