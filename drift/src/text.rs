//! Descriptors of text columns, computed as Evidently's text features compute them, so the
//! numeric tests can check a text column's drift: length in characters (`TextLength`), word
//! count (`WordCount`) and the percentage of characters that are neither letters nor spaces
//! (`NonLetterCharacterPercentage`). A missing text has every descriptor 0, as in Evidently.

/// One numeric descriptor of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descriptor {
    Length,
    WordCount,
    NonLetterPercent,
}

impl Descriptor {
    pub const ALL: [Descriptor; 3] = [
        Descriptor::Length,
        Descriptor::WordCount,
        Descriptor::NonLetterPercent,
    ];

    /// The suffix that names the descriptor after its column (`answer.length`).
    pub fn name(self) -> &'static str {
        match self {
            Descriptor::Length => "length",
            Descriptor::WordCount => "word_count",
            Descriptor::NonLetterPercent => "non_letter_percent",
        }
    }

    /// The descriptor of one text.
    pub fn of(self, text: Option<&str>) -> f64 {
        let Some(text) = text else { return 0.0 };
        match self {
            Descriptor::Length => text.chars().count() as f64,
            Descriptor::WordCount => word_count(text) as f64,
            Descriptor::NonLetterPercent => {
                let length = text.chars().count();
                if length == 0 {
                    // Evidently divides by zero here; an empty text has no non-letters.
                    return 0.0;
                }
                let non_letters = text
                    .chars()
                    .filter(|c| !c.is_alphabetic() && *c != ' ')
                    .count();
                100.0 * non_letters as f64 / length as f64
            }
        }
    }
}

/// Words after every character other than an ASCII letter or a space is removed (so
/// `don't` is one word and a newline joins the words around it), as Evidently counts them.
fn word_count(text: &str) -> usize {
    let kept: String = text
        .chars()
        .filter(|c| c.is_ascii_alphabetic() || *c == ' ')
        .collect();
    kept.split(' ').filter(|w| !w.is_empty()).count()
}

/// The descriptor's values over a column.
pub fn describe(texts: &[Option<String>], descriptor: Descriptor) -> Vec<f64> {
    texts.iter().map(|t| descriptor.of(t.as_deref())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_count_as_evidently_counts() {
        let text = Some("Don't stop,\nnow: 42 ok");
        assert_eq!(Descriptor::Length.of(text), 22.0);
        // "Dont stopnow  ok" -> 3 words
        assert_eq!(Descriptor::WordCount.of(text), 3.0);
        // ' , \n : 4 2 -> 6 of 22
        assert_eq!(Descriptor::NonLetterPercent.of(text), 100.0 * 6.0 / 22.0);
        assert_eq!(Descriptor::WordCount.of(None), 0.0);
        assert_eq!(Descriptor::NonLetterPercent.of(Some("")), 0.0);
    }
}
