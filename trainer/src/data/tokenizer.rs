//! The tokenizer: a byte-level BPE trained with the `tokenizers` crate (for the tiny model), or
//! any Hugging Face `tokenizer.json` a real checkpoint ships.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    Tokenizer, TokenizerBuilder,
};

use crate::data::prompts::{ChatTemplate, PromptFormat, IM_END, IM_START};
use crate::TrainerError;

/// End of a completion; also the padding token of the tiny model.
pub const END_OF_TEXT: &str = "<|endoftext|>";

fn error(what: &str, err: impl std::fmt::Display) -> TrainerError {
    TrainerError::Config(format!("{what}: {err}"))
}

/// Train a byte-level BPE of (at most) `vocab_size` tokens on `texts`.
pub fn train_bpe(texts: &[String], vocab_size: usize) -> Result<Tokenizer, TrainerError> {
    let special: Vec<AddedToken> = [END_OF_TEXT, IM_START, IM_END]
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(special)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .show_progress(false)
        .build();
    let mut builder = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default())
    .with_pre_tokenizer(Some(ByteLevel::new(false, true, true).into()))
    .with_decoder(Some(ByteLevelDecoder::default().into()))
    .build()
    .map_err(|e| error("building the tokenizer", e))?;
    builder
        .train(&mut trainer, texts.iter())
        .map_err(|e| error("training the tokenizer", e))?;
    Ok(Tokenizer::from(builder))
}

pub fn load(path: &Path) -> Result<Tokenizer, TrainerError> {
    Tokenizer::from_file(path).map_err(|e| error(&path.display().to_string(), e))
}

pub fn save(tokenizer: &Tokenizer, path: &Path) -> Result<(), TrainerError> {
    tokenizer
        .save(path, false)
        .map_err(|e| error(&path.display().to_string(), e))
}

/// The id of a special token the tokenizer must have.
pub fn token_id(tokenizer: &Tokenizer, token: &str) -> Result<u32, TrainerError> {
    tokenizer
        .token_to_id(token)
        .ok_or_else(|| TrainerError::Config(format!("the tokenizer has no {token} token")))
}

/// The token that ends a completion of a model without a `tokenizer_config.json`:
/// `<|endoftext|>`, or `<|im_end|>` in chat-only vocabularies.
pub fn end_token(tokenizer: &Tokenizer) -> Result<u32, TrainerError> {
    token_id(tokenizer, END_OF_TEXT).or_else(|_| token_id(tokenizer, IM_END))
}

/// A model directory's tokenizer, how its prompts are written, and the token that ends its
/// answers.
#[derive(Clone)]
pub struct ModelTokenizer {
    pub tokenizer: Tokenizer,
    pub format: PromptFormat,
    pub end_id: u32,
}

impl ModelTokenizer {
    /// `dir/tokenizer.json`, and `dir/tokenizer_config.json` when there is one: its
    /// `chat_template` decides the prompt format and its `eos_token` ends an answer (an instruct
    /// model's turn ends at `<|im_end|>`, not `<|endoftext|>`).
    pub fn load(dir: &Path) -> Result<Self, TrainerError> {
        let tokenizer = load(&dir.join("tokenizer.json"))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Option<serde_json::Value> = match std::fs::read_to_string(&config_path) {
            Ok(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| error(&config_path.display().to_string(), e))?,
            ),
            Err(_) => None,
        };
        let special = |key: &str| -> Option<String> {
            let value = config.as_ref()?.get(key)?;
            // A plain string, or an AddedToken object with `content`.
            value
                .as_str()
                .or_else(|| value.get("content")?.as_str())
                .map(str::to_string)
        };
        let eos = special("eos_token");
        let end_id = match &eos {
            Some(token) => token_id(&tokenizer, token)?,
            None => end_token(&tokenizer)?,
        };
        let template = config
            .as_ref()
            .and_then(|c| c.get("chat_template")?.as_str().map(str::to_string));
        let format = match template {
            Some(source) => PromptFormat::Template(ChatTemplate {
                source,
                bos_token: special("bos_token").unwrap_or_default(),
                eos_token: eos.unwrap_or_default(),
            }),
            None => PromptFormat::of_tokenizer(Some(&tokenizer)),
        };
        Ok(Self {
            tokenizer,
            format,
            end_id,
        })
    }
}

/// Files beside `tokenizer.json` that a model directory carries on to the next stage.
pub const TOKENIZER_COMPANIONS: [&str; 2] = ["tokenizer_config.json", "generation_config.json"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_bpe_round_trips_python_and_keeps_special_tokens_whole() {
        let corpus: Vec<String> = (0..50).map(|i| format!("def f_{i}(x):\n    return x + {i}\n\n\ndef test_f_{i}():\n    assert f_{i}(1) == {}\n", i + 1)).collect();
        let tokenizer = train_bpe(&corpus, 400).unwrap();
        let text = format!(
            "{IM_START}user\ndef g(y):\n    return y * 2  # ünïcode\n{IM_END}{END_OF_TEXT}"
        );
        let encoding = tokenizer.encode(text.as_str(), false).unwrap();
        assert_eq!(tokenizer.decode(encoding.get_ids(), false).unwrap(), text);
        let end = token_id(&tokenizer, END_OF_TEXT).unwrap();
        assert_eq!(*encoding.get_ids().last().unwrap(), end);
        // Frequent code fragments became single tokens: a corpus text needs far fewer tokens
        // than bytes.
        assert_eq!(
            tokenizer.encode(" return", false).unwrap().get_ids().len(),
            1
        );
        let sample = &corpus[7];
        let tokens = tokenizer
            .encode(sample.as_str(), false)
            .unwrap()
            .get_ids()
            .len();
        assert!(
            tokens * 2 < sample.len(),
            "{tokens} tokens for {} bytes",
            sample.len()
        );
        assert!(tokenizer.get_vocab_size(true) <= 400);
    }
}
