//! The file as written: serde types with spans, before defaults are applied.
//!
//! Every struct denies unknown keys so a misspelled key is an error, not a silently
//! ignored setting. Values that later checks may reject are wrapped in [`Spanned`] so
//! the error can point at them.

use serde::Deserialize;
use toml::Spanned;

use super::LinkModel;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopology {
    pub network: RawNetwork,
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub links: Vec<RawLink>,
}

/// `[network]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub name: Spanned<String>,
    pub seed: Option<u64>,
    pub time_scale: Option<Spanned<f64>>,
    pub classical_latency: Option<Spanned<String>>,
}

/// `[defaults]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    #[serde(default)]
    pub node: RawNodeParams,
    #[serde(default)]
    pub link: RawLinkParams,
}

/// The node settings, as found in `[defaults.node]` and in each `[[nodes]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNodeParams {
    pub memory_qubits: Option<Spanned<u32>>,
    pub t1: Option<Spanned<String>>,
    pub t2: Option<Spanned<String>>,
    pub gate_error: Option<Spanned<f64>>,
    pub readout_error: Option<Spanned<f64>>,
}

/// One `[[nodes]]` entry. The settings are repeated rather than `#[serde(flatten)]`ed
/// because flatten does not work with `deny_unknown_fields` nor keep spans.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub name: Spanned<String>,
    pub memory_qubits: Option<Spanned<u32>>,
    pub t1: Option<Spanned<String>>,
    pub t2: Option<Spanned<String>>,
    pub gate_error: Option<Spanned<f64>>,
    pub readout_error: Option<Spanned<f64>>,
}

impl RawNode {
    /// Splits off the name from the settings.
    pub fn into_parts(self) -> (Spanned<String>, RawNodeParams) {
        let params = RawNodeParams {
            memory_qubits: self.memory_qubits,
            t1: self.t1,
            t2: self.t2,
            gate_error: self.gate_error,
            readout_error: self.readout_error,
        };
        (self.name, params)
    }
}

/// The link settings, as found in `[defaults.link]` and in each `[[links]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLinkParams {
    pub length_km: Option<Spanned<f64>>,
    pub fidelity: Option<Spanned<f64>>,
    pub model: Option<LinkModel>,
    pub attenuation_db_per_km: Option<Spanned<f64>>,
    pub detector_efficiency: Option<Spanned<f64>>,
    pub emission_efficiency: Option<Spanned<f64>>,
    pub visibility: Option<Spanned<f64>>,
    pub bright_state: Option<Spanned<f64>>,
    pub cycle_time: Option<Spanned<String>>,
    pub classical_latency: Option<Spanned<String>>,
    pub link_layer: Option<Spanned<String>>,
}

/// One `[[links]]` entry (settings repeated for the same reason as [`RawNode`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLink {
    pub a: Spanned<String>,
    pub b: Spanned<String>,
    pub length_km: Option<Spanned<f64>>,
    pub fidelity: Option<Spanned<f64>>,
    pub model: Option<LinkModel>,
    pub attenuation_db_per_km: Option<Spanned<f64>>,
    pub detector_efficiency: Option<Spanned<f64>>,
    pub emission_efficiency: Option<Spanned<f64>>,
    pub visibility: Option<Spanned<f64>>,
    pub bright_state: Option<Spanned<f64>>,
    pub cycle_time: Option<Spanned<String>>,
    pub classical_latency: Option<Spanned<String>>,
    pub link_layer: Option<Spanned<String>>,
}

impl RawLink {
    /// Splits off the two ends from the settings.
    pub fn into_parts(self) -> (Spanned<String>, Spanned<String>, RawLinkParams) {
        let params = RawLinkParams {
            length_km: self.length_km,
            fidelity: self.fidelity,
            model: self.model,
            attenuation_db_per_km: self.attenuation_db_per_km,
            detector_efficiency: self.detector_efficiency,
            emission_efficiency: self.emission_efficiency,
            visibility: self.visibility,
            bright_state: self.bright_state,
            cycle_time: self.cycle_time,
            classical_latency: self.classical_latency,
            link_layer: self.link_layer,
        };
        (self.a, self.b, params)
    }
}
