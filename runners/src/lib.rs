//! One step = one process: skill lookup and manifests, spawning in a process group, the step
//! protocol files, timeouts and kill of the whole tree, and resource admission.
