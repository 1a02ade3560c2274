/*
 * Wrapper header for the bindgen pass of build.rs (Windows, WDK, `wdk` feature only).
 * The generated bindings are used only to check the hand-written `vmbus_kmcl::sys` layer:
 * struct sizes and every interface slot offset must agree.
 */
#pragma once

#include <ntddk.h>
#include <vmbuskernelmodeclientlibapi.h>
