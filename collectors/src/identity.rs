//! The `[identity]` entities file: people, roles and project memberships, as the identity
//! provider or SWB exports them. Each pass re-reads it and replaces the `identity` partition,
//! so edits to the file (and removals from it) reach the store; a file that does not parse
//! or validate changes nothing, and one that lost most of its people is held back. A
//! membership whose end (the member's tag named after the parent) has passed is left out.

use std::path::PathBuf;

use tregov_config::IdentityConfig;
use tregov_engine::clock::wall_ms;
use tregov_engine::collect::{BoxFuture, CollectContext, Collector, Listing, RunReport, Source};
use tregov_engine::entities::parse_entities_file;
use tregov_engine::events::ObservationKind;
use tregov_engine::memberships;

pub struct Identity {
    path: PathBuf,
}

impl Identity {
    pub fn new(config: &IdentityConfig) -> Self {
        Self {
            path: config.entities.clone(),
        }
    }

    fn read(&self, ctx: &CollectContext<'_>, report: &mut RunReport) -> tregov_engine::Result<()> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| tregov_engine::EngineError::io(&self.path, e))?;
        let entities =
            parse_entities_file(&self.path.display().to_string(), &text, Some(ctx.schema))?;
        // Memberships whose end has passed are left out now; the clock brings us back at the
        // next end.
        let now = wall_ms(std::time::SystemTime::now());
        let entities = memberships::as_of(entities, now, Some(ctx.schema))?;
        report.files = 1;
        let listing = Listing {
            entities,
            complete: true,
            ..Default::default()
        };
        ctx.write(Source::Identity, listing, report)
    }
}

impl Collector for Identity {
    fn source(&self) -> Source {
        Source::Identity
    }

    fn answers(&self) -> &'static [ObservationKind] {
        &[]
    }

    fn dated(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let mut report = RunReport::new(Source::Identity);
            if let Err(e) = self.read(ctx, &mut report) {
                // A bad file changes nothing: the last good identities stay in force.
                report.fail(e);
            }
            report
        })
    }
}
