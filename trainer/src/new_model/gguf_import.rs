//! `unitforge import-gguf`: a Llama-architecture GGUF file (llama.cpp's format) into the Hugging
//! Face layout the trainer loads.
//!
//! Tensors are dequantised with candle's GGUF reader (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0 and the K-quants) and renamed to Hugging Face's names. llama.cpp's converter permutes the
//! rows of the query and key projections so that its rotary embedding can rotate adjacent pairs;
//! the trainer (like Hugging Face) rotates the two halves of each head, so those rows are
//! permuted back ([`unpermute_rotary`]). The tokenizer is rebuilt from the GGUF's vocabulary,
//! merges and token types as a byte-level BPE with the pre-tokenizer its `tokenizer.ggml.pre`
//! names; the chat template and special tokens go to `tokenizer_config.json`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::TrainerError;

/// What `import_gguf` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    pub architecture: String,
    pub name: Option<String>,
    pub tensors: usize,
    pub parameters: usize,
    pub vocab_size: usize,
    pub layers: usize,
    /// Tensor types found in the file, with their counts.
    pub source_types: Vec<(String, usize)>,
    pub dtype: String,
    pub tied_embeddings: bool,
}

fn config_error(what: impl Into<String>) -> TrainerError {
    TrainerError::Config(what.into())
}

/// Metadata accessors that name the missing or mistyped key.
struct Metadata<'a>(&'a HashMap<String, Value>);

impl Metadata<'_> {
    fn get(&self, key: &str) -> Result<&Value, TrainerError> {
        self.0
            .get(key)
            .ok_or_else(|| config_error(format!("the GGUF file has no `{key}`")))
    }

    fn usize(&self, key: &str) -> Result<usize, TrainerError> {
        let value = self.get(key)?;
        value
            .to_u64()
            .map(|v| v as usize)
            .or_else(|_| value.to_u32().map(|v| v as usize))
            .or_else(|_| value.to_i32().map(|v| v as usize))
            .map_err(|e| config_error(format!("`{key}`: {e}")))
    }

    fn f64(&self, key: &str) -> Result<f64, TrainerError> {
        let value = self.get(key)?;
        value
            .to_f32()
            .map(f64::from)
            .or_else(|_| value.to_f64())
            .map_err(|e| config_error(format!("`{key}`: {e}")))
    }

    fn string(&self, key: &str) -> Result<String, TrainerError> {
        Ok(self
            .get(key)?
            .to_string()
            .map_err(|e| config_error(format!("`{key}`: {e}")))?
            .clone())
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, TrainerError> {
        self.get(key)?
            .to_vec()
            .map_err(|e| config_error(format!("`{key}`: {e}")))?
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|e| config_error(format!("`{key}`: {e}")))
            })
            .collect()
    }

    fn optional_u32(&self, key: &str) -> Option<u32> {
        self.0.get(key).and_then(|v| v.to_u32().ok())
    }
}

/// Tensor types this importer reads (Q8_1 and Q8_K are llama.cpp's scratch formats for
/// activations, never model weights).
fn readable(dtype: GgmlDType) -> bool {
    !matches!(dtype, GgmlDType::Q8_1 | GgmlDType::Q8K)
}

/// Undo llama.cpp's rotary permutation of a query or key projection [heads·head_dim, in]:
/// within each head, llama.cpp stores row pairs (i, head_dim/2 + i) next to each other; Hugging
/// Face keeps the first halves, then the second halves.
pub fn unpermute_rotary(weight: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = weight.dims2()?;
    let head_dim = rows / heads;
    weight
        .reshape((heads, head_dim / 2, 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))
}

/// The permutation llama.cpp's converter applies (the inverse of [`unpermute_rotary`]).
pub fn permute_rotary(weight: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = weight.dims2()?;
    let head_dim = rows / heads;
    weight
        .reshape((heads, 2, head_dim / 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))
}

/// Hugging Face's name of a llama.cpp tensor, and whether its rows carry the rotary
/// permutation (Some(heads)).
fn hf_name(name: &str, heads: usize, kv_heads: usize) -> Option<(String, Option<usize>)> {
    match name {
        "token_embd.weight" => return Some(("model.embed_tokens.weight".into(), None)),
        "output_norm.weight" => return Some(("model.norm.weight".into(), None)),
        "output.weight" => return Some(("lm_head.weight".into(), None)),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (hf, permuted) = match part {
        "attn_q.weight" => ("self_attn.q_proj.weight", Some(heads)),
        "attn_k.weight" => ("self_attn.k_proj.weight", Some(kv_heads)),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        "attn_norm.weight" => ("input_layernorm.weight", None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{hf}"), permuted))
}

/// Hugging Face's pre-tokenizer for llama.cpp's `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Result<serde_json::Value, TrainerError> {
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    match pre {
        // llama.cpp splits digits one by one, then applies the GPT-2 regex.
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" => Ok(serde_json::json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]
        })),
        "default" | "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" => Ok(byte_level),
        other => Err(config_error(format!(
            "pre-tokenizer `{other}` (tokenizer.ggml.pre) is not supported: import-gguf knows smollm, starcoder, refact, codeshell, command-r, gpt-2, mpt, olmo and jais"
        ))),
    }
}

/// `tokenizer.json` (and the special tokens) from the GGUF's vocabulary.
fn tokenizer_json(meta: &Metadata) -> Result<(serde_json::Value, Vec<String>), TrainerError> {
    let model = meta.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(config_error(format!(
            "tokenizer model `{model}` (tokenizer.ggml.model) is not supported: import-gguf reads byte-level BPE (`gpt2`) vocabularies"
        )));
    }
    let pre = meta
        .0
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_else(|| "default".into());
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let merges = meta.strings("tokenizer.ggml.merges")?;
    let types: Vec<i64> = match meta.0.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| config_error(format!("`tokenizer.ggml.token_type`: {e}")))?
            .iter()
            .map(|t| t.to_i32().map(i64::from).unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), serde_json::Value::from(id)))
        .collect();
    let merges: Vec<serde_json::Value> = merges
        .iter()
        .map(|m| {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| config_error(format!("merge `{m}` is not two tokens")))?;
            Ok(serde_json::json!([a, b]))
        })
        .collect::<Result<_, TrainerError>>()?;
    // llama.cpp's token types: 3 = control (special), 4 = user-defined (added, not special).
    let mut special = Vec::new();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(id, _)| matches!(types.get(*id), Some(3 | 4)))
        .map(|(id, content)| {
            let is_special = types[id] == 3;
            if is_special {
                special.push(content.clone());
            }
            serde_json::json!({
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": !is_special, "special": is_special
            })
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(&pre)?,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges
        }
    });
    Ok((json, special))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), TrainerError> {
    std::fs::write(
        path,
        serde_json::to_string_pretty(value).expect("json serialises") + "\n",
    )
    .map_err(|e| TrainerError::Io(path.display().to_string(), e))
}

/// Import `gguf` into `out` (config.json, model.safetensors, tokenizer.json,
/// tokenizer_config.json, generation_config.json), weights stored as `dtype`.
pub fn import_gguf(gguf: &Path, out: &Path, dtype: DType) -> Result<ImportSummary, TrainerError> {
    let io = |e: std::io::Error| TrainerError::Io(gguf.display().to_string(), e);
    let mut file = std::fs::File::open(gguf).map_err(io)?;
    let content = Content::read(&mut file).map_err(|e| {
        config_error(format!(
            "{} is not a readable GGUF file: {e}",
            gguf.display()
        ))
    })?;
    let meta = Metadata(&content.metadata);
    let architecture = meta.string("general.architecture")?;
    if architecture != "llama" {
        return Err(config_error(format!(
            "architecture `{architecture}` is not supported: import-gguf reads Llama-architecture GGUF files"
        )));
    }
    let layers = meta.usize("llama.block_count")?;
    let hidden = meta.usize("llama.embedding_length")?;
    let heads = meta.usize("llama.attention.head_count")?;
    let kv_heads = meta.usize("llama.attention.head_count_kv").unwrap_or(heads);
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    for (name, info) in &content.tensor_infos {
        if !readable(info.ggml_dtype) {
            return Err(config_error(format!(
                "tensor `{name}` has type {:?}, which import-gguf does not read (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants are)",
                info.ggml_dtype
            )));
        }
    }
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut weights = HashMap::new();
    let mut types: std::collections::BTreeMap<String, usize> = Default::default();
    let mut parameters = 0;
    for name in names {
        let Some((hf, permuted)) = hf_name(name, heads, kv_heads) else {
            tracing::warn!("skipping GGUF tensor `{name}`: no Hugging Face counterpart");
            continue;
        };
        let qtensor = content
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| config_error(format!("tensor `{name}`: {e}")))?;
        *types.entry(format!("{:?}", qtensor.dtype())).or_default() += 1;
        let mut tensor = qtensor.dequantize(&Device::Cpu)?;
        if let Some(heads) = permuted {
            tensor = unpermute_rotary(&tensor, heads)?;
        }
        parameters += tensor.elem_count();
        weights.insert(hf, tensor.to_dtype(dtype)?);
    }
    let tied = !weights.contains_key("lm_head.weight");
    let embed = weights
        .get("model.embed_tokens.weight")
        .ok_or_else(|| config_error("the GGUF file has no token_embd.weight"))?;
    let vocab_size = embed.dim(0)?;
    let feed_forward = weights
        .get("model.layers.0.mlp.up_proj.weight")
        .map_or(Ok(0), |w| w.dim(0))?;
    std::fs::create_dir_all(out).map_err(|e| TrainerError::Io(out.display().to_string(), e))?;
    candle_core::safetensors::save(&weights, out.join("model.safetensors"))?;

    let bos = meta.optional_u32("tokenizer.ggml.bos_token_id");
    let eos = meta.optional_u32("tokenizer.ggml.eos_token_id");
    let pad = meta.optional_u32("tokenizer.ggml.padding_token_id");
    let unk = meta.optional_u32("tokenizer.ggml.unknown_token_id");
    let dtype_name = match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    };
    write_json(
        &out.join("config.json"),
        &serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "intermediate_size": meta.usize("llama.feed_forward_length").unwrap_or(feed_forward),
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "max_position_embeddings": meta.usize("llama.context_length")?,
            "rope_theta": meta.f64("llama.rope.freq_base").unwrap_or(10_000.0),
            "rms_norm_eps": meta.f64("llama.attention.layer_norm_rms_epsilon")?,
            "tie_word_embeddings": tied,
            "attention_bias": false,
            "hidden_act": "silu",
            "bos_token_id": bos,
            "eos_token_id": eos,
            "torch_dtype": dtype_name,
        }),
    )?;
    let (tokenizer, special) = tokenizer_json(&meta)?;
    // Loading it back checks it is a valid tokenizer.json before anything relies on it.
    tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&tokenizer).expect("json"))
        .map_err(|e| config_error(format!("the rebuilt tokenizer does not load: {e}")))?;
    write_json(&out.join("tokenizer.json"), &tokenizer)?;
    let token = |id: Option<u32>| id.and_then(|id| tokens.get(id as usize).cloned());
    let chat_template = meta
        .0
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok().cloned());
    write_json(
        &out.join("tokenizer_config.json"),
        &serde_json::json!({
            "tokenizer_class": "GPT2Tokenizer",
            "bos_token": token(bos),
            "eos_token": token(eos),
            "pad_token": token(pad),
            "unk_token": token(unk),
            "add_bos_token": content.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false),
            "additional_special_tokens": special,
            "chat_template": chat_template,
            "model_max_length": meta.usize("llama.context_length")?,
            "clean_up_tokenization_spaces": false,
        }),
    )?;
    write_json(
        &out.join("generation_config.json"),
        &serde_json::json!({
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": pad,
        }),
    )?;
    Ok(ImportSummary {
        architecture,
        name: meta
            .0
            .get("general.name")
            .and_then(|v| v.to_string().ok().cloned()),
        tensors: weights.len(),
        parameters,
        vocab_size,
        layers,
        source_types: types.into_iter().collect(),
        dtype: dtype_name.into(),
        tied_embeddings: tied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{gguf_file, QTensor};

    #[test]
    fn the_rotary_unpermutation_undoes_llama_cpps_permutation() {
        let mut rng = unitforge_sandbox::rng::SplitMix64::new(5);
        let values: Vec<f32> = (0..12 * 8).map(|_| rng.uniform() as f32).collect();
        let weight = Tensor::from_vec(values, (12, 8), &Device::Cpu).unwrap();
        for heads in [1, 2, 3] {
            let back = unpermute_rotary(&permute_rotary(&weight, heads).unwrap(), heads).unwrap();
            let gap: f32 = (&back - &weight)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(gap, 0.0, "{heads} heads");
        }
        // One head of dimension 4: llama.cpp interleaves the halves (rows 0, 2, 1, 3).
        let rows = Tensor::arange(0f32, 4.0, &Device::Cpu)
            .unwrap()
            .reshape((4, 1))
            .unwrap();
        let permuted: Vec<f32> = permute_rotary(&rows, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(permuted, [0.0, 2.0, 1.0, 3.0]);
    }

    /// A one-layer Llama GGUF written on the spot.
    fn synthetic(
        dir: &Path,
        architecture: &str,
        embed_type: GgmlDType,
        pre: &str,
    ) -> std::path::PathBuf {
        let dense = |rows: usize, cols: usize| {
            Tensor::ones((rows, cols), DType::F32, &Device::Cpu).unwrap()
        };
        let q = |t: Tensor, dtype: GgmlDType| QTensor::quantize(&t, dtype).unwrap();
        let vocab = 64;
        let tensors = vec![
            ("token_embd.weight", q(dense(vocab, 32), embed_type)),
            (
                "output_norm.weight",
                q(dense(1, 32).squeeze(0).unwrap(), GgmlDType::F32),
            ),
            (
                "blk.0.attn_norm.weight",
                q(dense(1, 32).squeeze(0).unwrap(), GgmlDType::F32),
            ),
            (
                "blk.0.ffn_norm.weight",
                q(dense(1, 32).squeeze(0).unwrap(), GgmlDType::F32),
            ),
            ("blk.0.attn_q.weight", q(dense(32, 32), GgmlDType::Q8_0)),
            ("blk.0.attn_k.weight", q(dense(16, 32), GgmlDType::Q4_0)),
            ("blk.0.attn_v.weight", q(dense(16, 32), GgmlDType::Q4_1)),
            ("blk.0.attn_output.weight", q(dense(32, 32), GgmlDType::F16)),
            ("blk.0.ffn_gate.weight", q(dense(64, 32), GgmlDType::F32)),
            ("blk.0.ffn_up.weight", q(dense(64, 32), GgmlDType::F32)),
            ("blk.0.ffn_down.weight", q(dense(32, 64), GgmlDType::F32)),
        ];
        let tokens: Vec<gguf_file::Value> = (0..vocab)
            .map(|i| {
                gguf_file::Value::String(match i {
                    0..5 => ["<|endoftext|>", "<|im_end|>", "t", "2", "t2"][i].to_string(),
                    _ => format!("x{i}"),
                })
            })
            .collect();
        let types: Vec<gguf_file::Value> = (0..vocab)
            .map(|i| gguf_file::Value::I32(if i < 2 { 3 } else { 1 }))
            .collect();
        let s = |v: &str| gguf_file::Value::String(v.into());
        let u = gguf_file::Value::U32;
        let metadata = vec![
            ("general.architecture", s(architecture)),
            ("llama.block_count", u(1)),
            ("llama.embedding_length", u(32)),
            ("llama.feed_forward_length", u(64)),
            ("llama.attention.head_count", u(4)),
            ("llama.attention.head_count_kv", u(2)),
            ("llama.context_length", u(128)),
            ("llama.rope.freq_base", gguf_file::Value::F32(10000.0)),
            (
                "llama.attention.layer_norm_rms_epsilon",
                gguf_file::Value::F32(1e-5),
            ),
            ("tokenizer.ggml.model", s("gpt2")),
            ("tokenizer.ggml.pre", s(pre)),
            ("tokenizer.ggml.tokens", gguf_file::Value::Array(tokens)),
            ("tokenizer.ggml.token_type", gguf_file::Value::Array(types)),
            (
                "tokenizer.ggml.merges",
                gguf_file::Value::Array(vec![s("t 2")]),
            ),
            ("tokenizer.ggml.eos_token_id", u(1)),
        ];
        let path = dir.join("synthetic.gguf");
        let mut file = std::fs::File::create(&path).unwrap();
        let meta: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        gguf_file::write(&mut file, &meta, &refs).unwrap();
        path
    }

    #[test]
    fn a_synthetic_llama_imports_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = synthetic(dir.path(), "llama", GgmlDType::Q8_0, "smollm");
        let out = dir.path().join("out");
        let summary = import_gguf(&path, &out, DType::F32).unwrap();
        assert_eq!((summary.layers, summary.vocab_size), (1, 64));
        assert!(summary.tied_embeddings);
        let model =
            crate::model::decoder::Model::load_for_inference(&out, None, &Device::Cpu).unwrap();
        assert_eq!(model.config().kv_heads(), 2);
        let text = crate::data::tokenizer::ModelTokenizer::load(&out).unwrap();
        assert_eq!(text.end_id, 1, "eos_token from tokenizer_config.json");
        // Digits are split one by one (the smollm pre-tokenizer).
        let pre = text.tokenizer.get_pre_tokenizer().unwrap();
        let json = serde_json::to_string(pre).unwrap();
        assert!(json.contains("Digits"), "{json}");
    }

    #[test]
    fn unsupported_architectures_types_and_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let gpt2 = synthetic(dir.path(), "gpt2", GgmlDType::F32, "smollm");
        let err = import_gguf(&gpt2, &out, DType::F32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("architecture `gpt2`"), "{err}");
        let scratch = synthetic(dir.path(), "llama", GgmlDType::Q8_1, "smollm");
        let err = import_gguf(&scratch, &out, DType::F32)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("token_embd.weight") && err.contains("Q8_1"),
            "{err}"
        );
        let odd = synthetic(dir.path(), "llama", GgmlDType::F32, "qwen2");
        let err = import_gguf(&odd, &out, DType::F32).unwrap_err().to_string();
        assert!(err.contains("pre-tokenizer `qwen2`"), "{err}");
        let text = dir.path().join("not.gguf");
        std::fs::write(&text, "hello").unwrap();
        let err = import_gguf(&text, &out, DType::F32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a readable GGUF file"), "{err}");
    }
}
