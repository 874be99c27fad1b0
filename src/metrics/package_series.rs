//! `package_latest_trusted_publish{package}`: one series per watched package, built at scrape time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

use super::opts;

/// `package_latest_trusted_publish{package}`, built at scrape time from one map of package to
/// value. A `GaugeVec` keeps about 430 bytes per series, over 4 MB for a scope of 10,000 packages;
/// this keeps the name and a flag. The map is replaced under its own lock, so a scrape sees one
/// cycle's values whole.
#[derive(Clone)]
pub(super) struct PackageSeries {
    desc: Desc,
    values: Arc<std::sync::Mutex<BTreeMap<String, bool>>>,
}

impl PackageSeries {
    pub(super) fn new() -> Self {
        let o = opts(
            "package_latest_trusted_publish",
            "1 if the package's latest version was published through trusted publishing (OIDC), else 0.",
        );
        Self {
            // Name, help and label are constants: this cannot fail at run time.
            desc: Desc::new(
                o.fq_name(),
                o.help,
                vec!["package".to_string()],
                HashMap::new(),
            )
            .expect("static metric"),
            values: Arc::default(),
        }
    }

    pub(super) fn values(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Collector for PackageSeries {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let metrics = self
            .values()
            .iter()
            .map(|(name, trusted)| {
                let mut label = LabelPair::default();
                label.set_name("package".to_string());
                // The registry's name, bounded like any name shown.
                label.set_value(crate::inert::show(name).into_owned());
                let mut gauge = prometheus::proto::Gauge::default();
                gauge.set_value(if *trusted { 1.0 } else { 0.0 });
                let mut metric = Metric::from_gauge(gauge);
                metric.set_label(vec![label]);
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::GAUGE);
        family.set_metric(metrics);
        vec![family]
    }
}
