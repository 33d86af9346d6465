//! The workflow file as written: a YAML tree with the position of every node, and the typed
//! structs of format v1 (which also generate the JSON Schema). No semantic checks here.
