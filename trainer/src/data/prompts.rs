//! The three prompt templates — generate tests, fix failing tests, diagnose a failure — each a
//! system part and a user part, rendered into one model input.
//!
//! How they are rendered is the model's [`PromptFormat`]: its own chat template (from
//! `tokenizer_config.json`, rendered with minijinja, the generation prompt appended) when it
//! ships one, as an instruct model does; otherwise ChatML when the tokenizer has the markers
//! (`<|im_start|>`, `<|im_end|>`: the tiny model's), else the plain format documented in
//! `docs/prompts.md`. Every rendering ends where the assistant's answer begins; training data,
//! the collator and generation all use it as it is.

use tokenizers::Tokenizer;

/// ChatML's turn markers (the same as Qwen2's, so the templates read alike); the tiny model's
/// tokenizer has them as special tokens.
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

pub const SYSTEM: &str = "You are a careful Python engineer. You write pytest unit tests that check behaviour, not implementation details: each test is small, fast, deterministic, and fails if the code under test is wrong.";

/// What to ask of the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Task<'a> {
    /// Write a pytest file for `code`, importable as `module`.
    Generate { module: &'a str, code: &'a str },
    /// Repair `tests`, which fail against `code` with `failure`.
    Fix {
        module: &'a str,
        code: &'a str,
        tests: &'a str,
        failure: &'a str,
    },
    /// Explain why `tests` fail against `code`.
    Diagnose {
        module: &'a str,
        code: &'a str,
        tests: &'a str,
        failure: &'a str,
    },
}

impl Task<'_> {
    pub fn user_message(&self) -> String {
        match self {
            Task::Generate { module, code } => format!(
                "Write pytest unit tests for the Python module `{module}` below. Import what you test with `from {module} import ...`. Reply with the test file only.\n\n```python\n{code}\n```"
            ),
            Task::Fix { module, code, tests, failure } => format!(
                "These pytest tests for the module `{module}` fail. Fix the tests (not the module) and reply with the corrected test file only.\n\nModule:\n```python\n{code}\n```\n\nTests:\n```python\n{tests}\n```\n\nFailure:\n```\n{failure}\n```"
            ),
            Task::Diagnose { module, code, tests, failure } => format!(
                "Explain in a few sentences why these pytest tests fail against the module `{module}`, and whether the tests or the module are wrong.\n\nModule:\n```python\n{code}\n```\n\nTests:\n```python\n{tests}\n```\n\nFailure:\n```\n{failure}\n```"
            ),
        }
    }
}

/// A model's chat template (a Jinja template over `messages`, as Hugging Face tokenizers ship
/// them) with the special tokens it may name.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplate {
    pub source: String,
    pub bos_token: String,
    pub eos_token: String,
}

/// How a model's inputs are written.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptFormat {
    /// The model's own chat template.
    Template(ChatTemplate),
    /// ChatML markers without a template (the tiny model), a blank line before the answer.
    ChatMl,
    /// No chat markers: `### System` / `### User` / `### Assistant`, a blank line before the
    /// answer.
    Plain,
}

impl PromptFormat {
    /// ChatML when `tokenizer` has the markers, else plain (no template known).
    pub fn of_tokenizer(tokenizer: Option<&Tokenizer>) -> Self {
        let chatml = tokenizer
            .is_some_and(|t| t.token_to_id(IM_START).is_some() && t.token_to_id(IM_END).is_some());
        if chatml {
            PromptFormat::ChatMl
        } else {
            PromptFormat::Plain
        }
    }
}

/// The model input for `task`, up to where the answer starts.
pub fn render(task: &Task<'_>, format: &PromptFormat) -> String {
    render_messages(SYSTEM, &task.user_message(), format)
}

/// A system and a user message in `format`, ending where the assistant's answer begins.
pub fn render_messages(system: &str, user: &str, format: &PromptFormat) -> String {
    match format {
        PromptFormat::Template(template) => render_template(template, system, user)
            .unwrap_or_else(|err| {
                // A template that does not render is reported once and ChatML used, which
                // is what most templates write.
                tracing::warn!(%err, "the chat template did not render; using ChatML");
                render_messages(system, user, &PromptFormat::ChatMl)
            }),
        // The project's own formats were trained with a blank line before the answer.
        PromptFormat::ChatMl => format!(
            "{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n\n"
        ),
        PromptFormat::Plain => {
            format!("### System\n{system}\n\n### User\n{user}\n\n### Assistant\n\n")
        }
    }
}

/// `template` over a system and a user message, with the generation prompt.
pub fn render_template(
    template: &ChatTemplate,
    system: &str,
    user: &str,
) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    // Hugging Face renders templates with trim_blocks and lstrip_blocks.
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()?,
    );
    env.add_template("chat", &template.source)?;
    env.get_template("chat")?.render(minijinja::context! {
        messages => vec![
            minijinja::context! { role => "system", content => system },
            minijinja::context! { role => "user", content => user },
        ],
        add_generation_prompt => true,
        bos_token => &template.bos_token,
        eos_token => &template.eos_token,
    })
}

pub use unitforge_sandbox::completion::extract_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_format_without_chat_markers() {
        let task = Task::Generate {
            module: "calc",
            code: "def add(a, b):\n    return a + b\n",
        };
        let text = render(&task, &PromptFormat::of_tokenizer(None));
        assert!(text.starts_with("### System\n"));
        assert!(text.contains("`calc`") && text.contains("def add(a, b):"));
        assert!(text.ends_with("### Assistant\n\n"));
    }

    #[test]
    fn a_chatml_chat_template_renders_what_chatml_is() {
        // SmolLM2-Instruct's template (abridged to its logic): a default system message when
        // none is given, ChatML turns, the generation prompt.
        let template = ChatTemplate {
            source: "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}".into(),
            bos_token: IM_START.into(),
            eos_token: IM_END.into(),
        };
        let rendered = render_messages("sys", "hello", &PromptFormat::Template(template));
        assert_eq!(
            rendered,
            "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn fix_and_diagnose_carry_the_failure() {
        for task in [
            Task::Fix {
                module: "m",
                code: "X = 1\n",
                tests: "def test_x(): assert X == 2\n",
                failure: "assert 1 == 2",
            },
            Task::Diagnose {
                module: "m",
                code: "X = 1\n",
                tests: "def test_x(): assert X == 2\n",
                failure: "assert 1 == 2",
            },
        ] {
            let message = task.user_message();
            assert!(message.contains("assert 1 == 2") && message.contains("def test_x"));
        }
    }
}
