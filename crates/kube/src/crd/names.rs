//! How each Istio kind is named to `kubectl` (plural, singular, short names) and which
//! columns `kubectl get` shows: Istio's choices, since users type and read them. Groups,
//! kinds and versions come from crates/api's registry instead.

/// A column of `kubectl get`.
pub(super) struct Column {
    pub name: &'static str,
    pub json_path: &'static str,
    pub type_: &'static str,
    pub description: &'static str,
}

/// The names of one kind.
pub(super) struct Names {
    pub kind: &'static str,
    pub plural: &'static str,
    pub short_names: &'static [&'static str],
    /// Empty: kubectl's default columns (name, age).
    pub columns: &'static [Column],
}

impl Names {
    /// Istio's singular is the kind in lower case.
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }
}

const AGE: Column = Column {
    name: "Age",
    json_path: ".metadata.creationTimestamp",
    type_: "date",
    description: "When the object was created.",
};

const fn text(name: &'static str, json_path: &'static str, description: &'static str) -> Column {
    Column {
        name,
        json_path,
        type_: "string",
        description,
    }
}

const NAMES: &[Names] = &[
    Names {
        kind: "Gateway",
        plural: "gateways",
        short_names: &["gw"],
        columns: &[],
    },
    Names {
        kind: "VirtualService",
        plural: "virtualservices",
        short_names: &["vs"],
        columns: &[
            text(
                "Gateways",
                ".spec.gateways",
                "Gateways (and `mesh` for sidecars) the routes apply to.",
            ),
            text("Hosts", ".spec.hosts", "Hosts the routes are for."),
            AGE,
        ],
    },
    Names {
        kind: "DestinationRule",
        plural: "destinationrules",
        short_names: &["dr"],
        columns: &[
            text("Host", ".spec.host", "The service the rule applies to."),
            AGE,
        ],
    },
    Names {
        kind: "ServiceEntry",
        plural: "serviceentries",
        short_names: &["se"],
        columns: &[
            text("Hosts", ".spec.hosts", "Hosts of the service."),
            text(
                "Location",
                ".spec.location",
                "MESH_EXTERNAL or MESH_INTERNAL: whether the service has sidecars.",
            ),
            text(
                "Resolution",
                ".spec.resolution",
                "How endpoints are found (NONE, STATIC, DNS, ...).",
            ),
            AGE,
        ],
    },
    Names {
        kind: "WorkloadEntry",
        plural: "workloadentries",
        short_names: &["we"],
        columns: &[
            AGE,
            text("Address", ".spec.address", "Where the workload is reached."),
        ],
    },
    Names {
        kind: "Sidecar",
        plural: "sidecars",
        short_names: &[],
        columns: &[],
    },
    Names {
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        short_names: &["pa"],
        columns: &[text("Mode", ".spec.mtls.mode", "The mutual-TLS mode."), AGE],
    },
    Names {
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        short_names: &["ap"],
        columns: &[
            text("Action", ".spec.action", "What matching requests get."),
            AGE,
        ],
    },
    Names {
        kind: "RequestAuthentication",
        plural: "requestauthentications",
        short_names: &["ra"],
        columns: &[],
    },
    Names {
        kind: "Telemetry",
        plural: "telemetries",
        short_names: &["telemetry"],
        columns: &[AGE],
    },
];

/// The names of `kind`, if it is one of the kinds above.
pub(super) fn of(kind: &str) -> Option<&'static Names> {
    NAMES.iter().find(|n| n.kind == kind)
}
