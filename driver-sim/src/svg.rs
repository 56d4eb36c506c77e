//! The timeline as a picture.

use crate::scenario::Scenario;
use crate::world::Outcome;

/// Renders the run as SVG.
pub fn render(_s: &Scenario, _o: &Outcome, _title: &str) -> String {
    String::new()
}
