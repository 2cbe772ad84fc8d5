//! Splits streamed LLM text into speakable clauses for TTS.
//!
//! The first clause goes to TTS as soon as it is speakable, so the first audio
//! does not wait for a whole answer: a sentence end always closes a clause; a
//! comma, semicolon, colon or dash closes one once enough words have come.
//! A long first sentence may be cut sooner still, after a few words, where a
//! phrase may end (not after "the", "of", "and", "is"...), so that the first
//! sound waits for a handful of tokens rather than a whole sentence.

/// When a clause is ready to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// Words a clause needs before a comma or semicolon may end it.
    pub min_words_at_comma: usize,
    /// Words after which any whitespace ends a clause (a run-on sentence).
    pub max_words: usize,
    /// Words the first clause needs before a comma may end it (lower, for a
    /// fast first sound).
    pub first_min_words_at_comma: usize,
    /// Words after which whitespace ends the first clause where a phrase may
    /// end (the word before it does not call for more); 0 never cuts it.
    pub first_max_words: usize,
}

/// The first-clause cap a response uses: five words, about 1.5 s of speech.
/// Fewer make the first chunk too short to sound natural; more wait longer
/// for the LLM before the first sound.
pub const DEFAULT_FIRST_MAX_WORDS: usize = 5;

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            min_words_at_comma: 6,
            max_words: 40,
            first_min_words_at_comma: 3,
            first_max_words: 0,
        }
    }
}

/// Incremental clause splitter: push text deltas, take out finished clauses.
#[derive(Debug, Default, Clone)]
pub struct Segmenter {
    config: SegmenterConfig,
    buf: String,
    emitted: usize,
}

fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？' | '\n')
}

fn is_soft_break(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | '—' | '，' | '；')
}

const DETERMINERS: &[&str] = &[
    "a", "an", "the", "this", "that", "these", "those", "my", "your", "his", "her", "its", "our",
    "their", "some", "any", "no", "every", "each", "all", "both", "few", "many", "much", "more",
    "most", "other", "another", "such", "what", "which", "whose",
];
const PREPOSITIONS: &[&str] = &[
    "of", "to", "in", "on", "at", "by", "for", "with", "from", "into", "onto", "about", "as",
    "like", "than", "over", "under", "between", "through", "during", "without", "within", "around",
    "after", "before", "near", "per", "via", "toward", "towards", "upon", "across", "behind",
    "beyond", "along", "among", "against",
];
const CONJUNCTIONS: &[&str] = &[
    "and", "or", "but", "nor", "so", "yet", "if", "because", "since", "while", "although",
    "though", "unless", "until", "when", "where", "whether", "how", "why", "who", "whom",
];
const AUXILIARIES: &[&str] = &[
    "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "have", "has",
    "had", "can", "could", "will", "would", "shall", "should", "may", "might", "must", "it's",
    "that's", "there's", "here's", "what's", "i'm", "you're", "we're", "they're", "he's", "she's",
    "i've", "you've", "we've", "they've", "i'll", "you'll", "we'll", "they'll", "i'd", "you'd",
    "we'd", "they'd", "let's", "don't", "doesn't", "didn't", "can't", "won't", "isn't", "aren't",
    "not",
];
const SUBJECTS_AND_ADVERBS: &[&str] = &[
    "i", "you", "we", "they", "he", "she", "it", "there", "here", "very", "quite", "really",
    "just", "also", "too", "rather", "pretty", "even", "only", "never", "always",
];

/// Whether a clause ending in `word` would leave the listener hanging: a
/// determiner, preposition, conjunction, auxiliary, pronoun or degree adverb
/// calls for what follows it ("the", "of", "and", "is", "I", "very").
fn needs_more(word: &str) -> bool {
    let lower = word
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'' && c != '’')
        .replace('’', "'")
        .to_lowercase();
    [
        DETERMINERS,
        PREPOSITIONS,
        CONJUNCTIONS,
        AUXILIARIES,
        SUBJECTS_AND_ADVERBS,
    ]
    .iter()
    .any(|list| list.contains(&lower.as_str()))
}

impl Segmenter {
    /// A segmenter with the given thresholds.
    pub fn new(config: SegmenterConfig) -> Self {
        Self {
            config,
            buf: String::new(),
            emitted: 0,
        }
    }

    /// A response's segmenter: the default thresholds, the first clause cut
    /// after `first_max_words` where a phrase may end (0: never).
    pub fn for_response(first_max_words: usize) -> Self {
        Self::new(SegmenterConfig {
            first_max_words,
            ..SegmenterConfig::default()
        })
    }

    /// Add a text delta; return the clauses it completed, in order.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buf.push_str(delta);
        let mut out = Vec::new();
        while let Some(end) = self.find_break() {
            let clause: String = self.buf.drain(..end).collect();
            let clause = clause.trim();
            if !clause.is_empty() && clause.chars().any(char::is_alphanumeric) {
                out.push(clause.to_owned());
                self.emitted += 1;
            }
        }
        out
    }

    /// The rest of the text at the end of the stream, if any is speakable.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        if rest.chars().any(char::is_alphanumeric) {
            self.emitted += 1;
            Some(rest.to_owned())
        } else {
            None
        }
    }

    /// Forget everything buffered (a cancelled response).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.emitted = 0;
    }

    /// Whether punctuation `c` at byte `i`, the last character buffered,
    /// ends a clause whatever comes next: after a word of two or more
    /// letters with no dot in it ("Paris." yes; "3.", "e.", "e.g." no), and
    /// for '!' or '?' after any letter or digit. An ellipsis or a closing
    /// quote that follows in the next token only adds punctuation, which is
    /// not spoken.
    fn may_end_here(&self, i: usize, c: char) -> bool {
        let word = self.buf[..i]
            .rsplit(char::is_whitespace)
            .next()
            .unwrap_or_default();
        let Some(prev) = word.chars().last() else {
            return false;
        };
        if matches!(c, '!' | '?' | '！' | '？' | '。') {
            return prev.is_alphanumeric();
        }
        let letters = word.chars().filter(|ch| ch.is_alphabetic()).count();
        prev.is_alphabetic() && letters >= 2 && !word.contains('.')
    }

    /// Byte index just past the first clause break in the buffer, if any.
    fn find_break(&self) -> Option<usize> {
        let min_comma = if self.emitted == 0 {
            self.config.first_min_words_at_comma
        } else {
            self.config.min_words_at_comma
        };
        let first_max = if self.emitted == 0 {
            self.config.first_max_words
        } else {
            0
        };
        let mut words = 0;
        let mut in_word = false;
        let mut word_start = 0;
        let mut chars = self.buf.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c.is_whitespace() {
                if in_word {
                    words += 1;
                    if words >= self.config.max_words {
                        return Some(i);
                    }
                    if first_max > 0 && words >= first_max && !needs_more(&self.buf[word_start..i])
                    {
                        return Some(i);
                    }
                }
                in_word = false;
                continue;
            }
            if !in_word {
                word_start = i;
            }
            in_word = true;
            let next = chars.peek().map(|&(_, n)| n);
            // Punctuation followed by whitespace is a break. At the end of
            // the text so far it is one too, unless the next character could
            // still make it part of a token ("3.5", "e.g.", "1,000"): the
            // first sound does not wait a whole token for the space after
            // the first sentence.
            let ends = match next {
                Some(n) => n.is_whitespace(),
                None => self.may_end_here(i, c),
            };
            if c == '\n' || (is_sentence_end(c) && ends) {
                return Some(i + c.len_utf8());
            }
            if is_soft_break(c) && ends && words + 1 >= min_comma {
                return Some(i + c.len_utf8());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(deltas: &[&str]) -> Vec<String> {
        let mut s = Segmenter::default();
        let mut out: Vec<String> = deltas.iter().flat_map(|d| s.push(d)).collect();
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_split_as_they_complete() {
        let mut s = Segmenter::default();
        assert!(s.push("Hello there").is_empty());
        assert_eq!(s.push(". How are"), vec!["Hello there."]);
        assert_eq!(s.push(" you?"), vec!["How are you?"]);
        assert!(s.push(" Fine").is_empty());
        assert_eq!(s.finish().as_deref(), Some("Fine"));
    }

    #[test]
    fn same_clauses_for_any_delta_split() {
        let text = "Paris is the capital of France, and it is lovely. It has 2.1 million people; \
                    many visit every year, especially in spring! Do you like it?";
        let whole = run(&[text]);
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(&refs), whole);
        assert_eq!(
            whole,
            vec![
                "Paris is the capital of France,",
                "and it is lovely.",
                // Five words are too few for a later clause to end at ";".
                "It has 2.1 million people; many visit every year,",
                "especially in spring!",
                "Do you like it?"
            ]
        );
    }

    #[test]
    fn a_sentence_end_at_the_end_of_the_text_so_far_is_a_break() {
        let mut s = Segmenter::default();
        assert_eq!(
            s.push("The capital is Paris."),
            vec!["The capital is Paris."]
        );
        assert_eq!(s.push(" Really?"), vec!["Really?"]);
        // Still part of a token: a number, an abbreviation, a one-letter word.
        for text in ["It costs 3.", "It is 9 a.m.", "Vitamin e.", "about 1,"] {
            let mut s = Segmenter::default();
            assert!(s.push(text).is_empty(), "{text}");
        }
        let mut s = Segmenter::default();
        assert!(s.push("It costs 3.").is_empty());
        assert_eq!(s.push("5 euros. Yes"), vec!["It costs 3.5 euros."]);
        // The first clause may end at a comma once it has three words.
        let mut s = Segmenter::default();
        assert_eq!(s.push("Well, you know,"), vec!["Well, you know,"]);
    }

    #[test]
    fn commas_need_enough_words() {
        // The first clause may end at a comma after 3 words; later ones need 6.
        assert_eq!(
            run(&["Well, I think so, but not sure, really, at all."]),
            vec!["Well, I think so,", "but not sure, really, at all."]
        );
    }

    #[test]
    fn long_run_on_text_is_cut() {
        let text = "word ".repeat(100);
        let out = run(&[&text]);
        assert!(out.len() >= 2);
        assert!(out.iter().all(|c| c.split_whitespace().count() <= 40));
    }

    #[test]
    fn a_long_first_sentence_is_cut_where_a_phrase_may_end() {
        let config = SegmenterConfig {
            first_max_words: DEFAULT_FIRST_MAX_WORDS,
            ..SegmenterConfig::default()
        };
        let text = "The capital of France is a beautiful old city on the Seine. \
                    It has many museums and a great many visitors every single year of the decade.";
        let mut s = Segmenter::new(config);
        let mut out: Vec<String> = text.split_inclusive(' ').flat_map(|d| s.push(d)).collect();
        out.extend(s.finish());
        assert_eq!(
            out,
            vec![
                // Five words would end at "is"; the cut waits for "beautiful".
                "The capital of France is a beautiful",
                "old city on the Seine.",
                // Only the first clause is cut short.
                "It has many museums and a great many visitors every single year of the decade.",
            ]
        );
        // A short first sentence is unchanged, and the default never cuts.
        let mut s = Segmenter::new(config);
        assert_eq!(s.push("Sure thing. "), vec!["Sure thing."]);
        assert_eq!(
            run(&["The capital of France is a beautiful old city on the Seine."]),
            vec!["The capital of France is a beautiful old city on the Seine."]
        );
        assert!(needs_more("the") && needs_more("It's") && needs_more("I") && needs_more("of,"));
        assert!(!needs_more("Paris") && !needs_more("beautiful") && !needs_more("café"));
    }

    #[test]
    fn punctuation_only_is_not_spoken() {
        assert!(run(&["... !! ", "--"]).is_empty());
    }
}
