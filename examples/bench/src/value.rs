//! The cached value: a realistic ~1 KB struct (strings, a list of tags, nested structs), the
//! same for every variant, and the loaders' error type.

use serde::{Deserialize, Serialize};

/// A realistic ~1 KB cached value: strings, a list of tags, nested structs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) id: u64,
    pub(crate) sku: String,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) price_cents: i64,
    pub(crate) currency: String,
    pub(crate) tags: Vec<String>,
    pub(crate) seller: Seller,
    pub(crate) dimensions: Dimensions,
    pub(crate) in_stock: bool,
    pub(crate) rating: f32,
    pub(crate) review_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Seller {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) country: String,
    pub(crate) email: String,
    pub(crate) verified: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Dimensions {
    pub(crate) width_mm: u32,
    pub(crate) height_mm: u32,
    pub(crate) depth_mm: u32,
    pub(crate) weight_g: u32,
}

pub(crate) fn sample_item(id: u64) -> Item {
    Item {
        id,
        sku: format!("SKU-{id:08}-EU"),
        title: format!("Ergonomic stainless steel widget, model {id}"),
        description: "A sturdy, well balanced widget for everyday use in the kitchen, the \
            workshop or the office. The brushed stainless steel body resists corrosion and \
            fingerprints, the silicone grip stays comfortable in wet hands, and the hinge is \
            rated for fifty thousand cycles. Dishwasher safe. Ships in recyclable cardboard \
            packaging without plastic film. Includes a printed quick-start guide in English, \
            German, French, Spanish and Italian, and a two-year limited warranty covering \
            manufacturing defects. Replacement parts are available for ten years after \
            purchase."
            .to_owned(),
        price_cents: 1999 + (id as i64 % 100),
        currency: "EUR".to_owned(),
        tags: [
            "kitchen",
            "workshop",
            "stainless-steel",
            "dishwasher-safe",
            "ergonomic",
            "eco-packaging",
            "bestseller",
            "gift-idea",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        seller: Seller {
            id: 4200 + id % 7,
            name: "Acme Household Goods GmbH".to_owned(),
            country: "DE".to_owned(),
            email: "orders@acme-household.example".to_owned(),
            verified: true,
        },
        dimensions: Dimensions {
            width_mm: 120,
            height_mm: 45,
            depth_mm: 30,
            weight_g: 310,
        },
        in_stock: !id.is_multiple_of(5),
        rating: 4.6,
        review_count: 1287,
    }
}

/// The loaders' error type (the `cached` crate needs a `Result`; every variant uses one).
#[derive(Debug, Clone)]
pub(crate) struct BenchError(pub(crate) String);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_value_is_about_one_kilobyte() {
        let n = serde_json::to_vec(&sample_item(42)).unwrap().len();
        assert!((900..=1200).contains(&n), "{n}");
    }
}
