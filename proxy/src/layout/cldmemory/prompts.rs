//! How cldmemory asks its model for a summary, a valence and keywords, and how it reads the
//! answers: its three instructions, temperature 0.3, its token limits; the summary trimmed,
//! the valence by JavaScript's `parseFloat(answer || '0')`, the keywords split on commas.

use crate::backend::enrichment::{ChatQuestion, ChatRecipe, Question};
use crate::js;

const SUMMARY_PROMPT: &str = "Create a concise 1-2 sentence summary capturing the essence of \
the text. Be specific and informative.";
const EMOTION_PROMPT: &str = "Analyze the emotional valence of this text. Return only a number \
between -1 (very negative) and 1 (very positive).";
const KEYWORDS_PROMPT: &str =
    "Extract 3-5 key words or phrases from the text. Return only comma-separated keywords.";

/// cldmemory's [`ChatRecipe`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CldMemoryChat;

impl ChatRecipe for CldMemoryChat {
    fn question(&self, question: Question) -> ChatQuestion {
        let (instructions, max_tokens) = match question {
            Question::Summary => (SUMMARY_PROMPT, 60),
            Question::Valence => (EMOTION_PROMPT, 10),
            Question::Keywords => (KEYWORDS_PROMPT, 50),
        };
        ChatQuestion {
            instructions,
            max_tokens,
        }
    }

    fn temperature(&self) -> f32 {
        0.3
    }

    fn read_summary(&self, answer: Option<&str>) -> String {
        js::trim(answer.unwrap_or_default()).to_string()
    }

    fn read_valence(&self, answer: Option<&str>) -> Option<f64> {
        // `parseFloat(answer || '0')`
        let answer = answer.filter(|text| !text.is_empty());
        js::parse_float(answer.unwrap_or("0"))
    }

    fn read_keywords(&self, answer: Option<&str>) -> Vec<String> {
        answer
            .map(|text| text.split(',').map(|k| js::trim(k).to_string()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_cldmemory_reads_them() {
        let chat = CldMemoryChat;
        assert_eq!(chat.read_summary(Some("  A day out.\n")), "A day out.");
        assert_eq!(chat.read_valence(Some("0.6 (fairly positive)")), Some(0.6));
        assert_eq!(chat.read_valence(None), Some(0.0), "`answer || '0'`");
        assert_eq!(chat.read_valence(Some("positive")), None);
        assert_eq!(
            chat.read_keywords(Some("tea, garden ,noon")),
            vec!["tea", "garden", "noon"]
        );
        assert_eq!(chat.question(Question::Summary).max_tokens, 60);
    }
}
