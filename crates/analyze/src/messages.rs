//! The message catalogue: Istio's codes, names and levels for what analyzers report.
//!
//! The codes and names are Istio's (so users can search for them); the wording of
//! each message is Trellis's own, written where it is reported.

/// How serious a message is, in istioctl's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        })
    }
}

/// A kind of message: code, name and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageType {
    pub code: &'static str,
    pub name: &'static str,
    pub level: Level,
}

macro_rules! catalogue {
    ($($ident:ident = $code:literal $name:literal $level:ident;)*) => {
        $(
            #[doc = concat!($code, " ", $name)]
            pub const $ident: MessageType = MessageType { code: $code, name: $name, level: Level::$level };
        )*
        /// Every message type Trellis can report.
        pub const ALL: &[MessageType] = &[$($ident),*];
    };
}

catalogue! {
    INTERNAL_ERROR = "IST0001" "InternalError" Error;
    DEPRECATED = "IST0002" "Deprecated" Warning;
    REFERENCED_RESOURCE_NOT_FOUND = "IST0101" "ReferencedResourceNotFound" Error;
    NAMESPACE_NOT_INJECTED = "IST0102" "NamespaceNotInjected" Info;
    POD_MISSING_PROXY = "IST0103" "PodMissingProxy" Warning;
    SCHEMA_VALIDATION_ERROR = "IST0106" "SchemaValidationError" Error;
    MISPLACED_ANNOTATION = "IST0107" "MisplacedAnnotation" Warning;
    UNKNOWN_ANNOTATION = "IST0108" "UnknownAnnotation" Warning;
    CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS = "IST0109" "ConflictingMeshGatewayVirtualServiceHosts" Error;
    CONFLICTING_SIDECAR_WORKLOAD_SELECTORS = "IST0110" "ConflictingSidecarWorkloadSelectors" Error;
    MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS = "IST0111" "MultipleSidecarsWithoutWorkloadSelectors" Error;
    VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED = "IST0112" "VirtualServiceDestinationPortSelectorRequired" Error;
    DEPLOYMENT_ASSOCIATED_TO_MULTIPLE_SERVICES = "IST0116" "DeploymentAssociatedToMultipleServices" Warning;
    DEPLOYMENT_REQUIRES_SERVICE_ASSOCIATED = "IST0117" "DeploymentRequiresServiceAssociated" Warning;
    PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION = "IST0118" "PortNameIsNotUnderNamingConvention" Info;
    NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL = "IST0128" "NoServerCertificateVerificationDestinationLevel" Warning;
    NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL = "IST0129" "NoServerCertificateVerificationPortLevel" Warning;
    VIRTUAL_SERVICE_UNREACHABLE_RULE = "IST0130" "VirtualServiceUnreachableRule" Warning;
    VIRTUAL_SERVICE_INEFFECTIVE_MATCH = "IST0131" "VirtualServiceIneffectiveMatch" Info;
    VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY = "IST0132" "VirtualServiceHostNotFoundInGateway" Warning;
    INVALID_ANNOTATION = "IST0125" "InvalidAnnotation" Warning;
    DEPRECATED_ANNOTATION = "IST0135" "DeprecatedAnnotation" Info;
    ALPHA_ANNOTATION = "IST0136" "AlphaAnnotation" Info;
    // --- h-ana-b ---
    NO_MATCHING_WORKLOADS_FOUND = "IST0127" "NoMatchingWorkloadsFound" Warning;
    SERVICE_ENTRY_ADDRESSES_REQUIRED = "IST0134" "ServiceEntryAddressesRequired" Warning;
    INEFFECTIVE_POLICY = "IST0167" "IneffectivePolicy" Warning;
    DESTINATION_RULE_SUBSET_NOT_SELECT_PODS = "IST0173" "DestinationRuleSubsetNotSelectPods" Error;
    UNKNOWN_DESTINATION_RULE_HOST = "IST0174" "UnknownDestinationRuleHost" Warning;
    JWKS_URI_FETCH_UNRESTRICTED = "IST0175" "JwksUriFetchUnrestricted" Warning;
    CONFLICTING_SERVICE_ENTRY_PROTOCOL = "IST0177" "ConflictingServiceEntryProtocol" Warning;
    // --- h-ana-c ---
    NAMESPACE_MULTIPLE_INJECTION_LABELS = "IST0123" "NamespaceMultipleInjectionLabels" Warning;
    DEPLOYMENT_CONFLICTING_PORTS = "IST0137" "DeploymentConflictingPorts" Warning;
    INVALID_APPLICATION_UID = "IST0144" "InvalidApplicationUID" Warning;
    NAMESPACE_INJECTION_ENABLED_BY_DEFAULT = "IST0148" "NamespaceInjectionEnabledByDefault" Info;
    EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME = "IST0150" "ExternalNameServiceTypeInvalidPortName" Warning;
    INVALID_TELEMETRY_PROVIDER = "IST0157" "InvalidTelemetryProvider" Warning;
    CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS = "IST0159" "ConflictingTelemetryWorkloadSelectors" Error;
    MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS = "IST0160" "MultipleTelemetriesWithoutWorkloadSelectors" Error;
    NEGATIVE_CONDITION_STATUS = "IST0171" "NegativeConditionStatus" Warning;
    // --- h-ana-a ---
    GATEWAY_DUPLICATE_CERTIFICATE = "IST0138" "GatewayDuplicateCertificate" Warning;
    INGRESS_ROUTE_RULES_NOT_AFFECTED = "IST0140" "IngressRouteRulesNotAffected" Warning;
    CONFLICTING_GATEWAYS = "IST0145" "ConflictingGateways" Error;
    JWT_CLAIM_BASED_ROUTING_WITHOUT_REQUEST_AUTHN = "IST0149" "JwtClaimBasedRoutingWithoutRequestAuthN" Error;
    INVALID_GATEWAY_CREDENTIAL = "IST0161" "InvalidGatewayCredential" Error;
    GATEWAY_PORT_NOT_DEFINED_ON_SERVICE = "IST0162" "GatewayPortNotDefinedOnService" Warning;
    REFERENCED_INTERNAL_GATEWAY = "IST0165" "ReferencedInternalGateway" Warning;
    INEFFECTIVE_SELECTOR = "IST0166" "IneffectiveSelector" Warning;
    // --- Trellis's own: where Trellis behaves differently from Istio (TRL codes) ---
    UNSUPPORTED_BY_TRELLIS = "TRL0001" "UnsupportedByTrellis" Warning;
}
