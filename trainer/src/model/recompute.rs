//! Activation checkpointing (`gradient_checkpointing: true`): a decoder layer that keeps only
//! its input and output for the backward, and runs its forward again there.
//!
//! Autograd keeps every intermediate tensor of the forward until the backward has used it: per
//! layer the projections, the attention scores and probabilities, the MLP's gate and up
//! activations — at the 0.5B shape over 100 MB a layer, most of a LoRA step's memory. Here the
//! training forward runs each layer outside the graph and records one node, [`Recomputed`],
//! holding the layer's input and output. When the backward reaches that node it recomputes the
//! layer from its input with a graph, backpropagates the incoming gradient through it, passes
//! the input's gradient on, and leaves the gradients of the layer's own parameters (LoRA
//! matrices, or every weight in full fine-tuning) with this thread, because a custom op can only
//! return gradients for its inputs. [`backward`] runs the backward and adds them to its store:
//! the training loop calls it instead of `Tensor::backward`. The price is one more forward of
//! every layer per step.
//!
//! The recomputation must draw what the first forward drew, so LoRA dropout is refused with it
//! (`Model::load` says so), and it runs on the CPU (the op's forward is a CPU copy).

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, Var};

use crate::model::blocks::{Layer, Rope};
use crate::model::lora::Pass;

thread_local! {
    /// Gradients of the recomputed layers' parameters, waiting for [`backward`] to collect them.
    static PARAMETER_GRADS: RefCell<GradStore> = RefCell::new(GradStore::default());
}

/// `loss.backward()`, plus the parameter gradients the recomputed layers found on the way.
pub fn backward(loss: &Tensor) -> Result<GradStore> {
    // Anything left by an earlier backward that was not collected belongs to no step.
    PARAMETER_GRADS.with(|pending| pending.take());
    let mut grads = loss.backward()?;
    grads.extend(PARAMETER_GRADS.with(|pending| pending.take()))?;
    Ok(grads)
}

/// `layer.forward` in a training pass, with its activations recomputed in the backward.
pub(crate) fn layer(
    layer: &Layer,
    x: &Tensor,
    rope: &Rope,
    eps: f64,
    offset: usize,
    key_mask: Option<&Tensor>,
) -> Result<Tensor> {
    let parameters = layer.parameters();
    // Without a gradient on its input or a parameter of its own the layer is not part of the
    // backward: plain forward.
    if parameters.is_empty() && !x.track_op() {
        return layer.forward(x, rope, eps, offset, None, key_mask, Pass::Train);
    }
    // The first layer's input (the embedding of a frozen table) carries no gradient, and a node
    // whose inputs carry none is never visited by the backward: make the input a variable, a copy
    // of one activation, so that the node is reached and the layer's parameters get theirs.
    let input = if x.track_op() {
        x.clone()
    } else {
        Var::from_tensor(x)?.as_tensor().clone()
    };
    // The forward outside the graph: its intermediates are freed as soon as it returns.
    let output = layer
        .forward(
            &input.detach(),
            rope,
            eps,
            offset,
            None,
            key_mask,
            Pass::Train,
        )?
        .detach()
        .contiguous()?;
    input.apply_op2(
        &output,
        Recomputed {
            layer: layer.clone(),
            parameters,
            rope: rope.clone(),
            eps,
            offset,
            key_mask: key_mask.cloned(),
        },
    )
}

/// The node a checkpointed layer leaves in the graph: inputs (layer input, layer output
/// computed without a graph), output the layer output.
struct Recomputed {
    layer: Layer,
    parameters: Vec<Tensor>,
    rope: Rope,
    eps: f64,
    offset: usize,
    key_mask: Option<Tensor>,
}

impl CustomOp2 for Recomputed {
    fn name(&self) -> &'static str {
        "recomputed-layer"
    }

    fn cpu_fwd(
        &self,
        _input: &CpuStorage,
        _input_layout: &Layout,
        output: &CpuStorage,
        output_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((
            output.try_clone(output_layout)?,
            output_layout.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        input: &Tensor,
        _output: &Tensor,
        _result: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let input = Var::from_tensor(&input.detach())?;
        let output = self.layer.forward(
            input.as_tensor(),
            &self.rope,
            self.eps,
            self.offset,
            None,
            self.key_mask.as_ref(),
            Pass::Train,
        )?;
        // ∂⟨output, grad⟩/∂θ is the vector-Jacobian product the outer backward asks for.
        let mut grads = (output * grad.detach())?.sum_all()?.backward()?;
        let mut layer_grads = GradStore::default();
        for parameter in &self.parameters {
            if let Some(g) = grads.remove(parameter) {
                layer_grads.insert(parameter, g);
            }
        }
        // `extend` adds to a gradient already waiting (a layer reached twice) or inserts.
        PARAMETER_GRADS.with(|pending| pending.borrow_mut().extend(layer_grads))?;
        Ok((grads.remove(input.as_tensor()), None))
    }
}
