// osbuild's own version, for what the tool records in images (osbuilder.yaml).

export { OSBUILD_VERSION } from "../engine/index.js";
